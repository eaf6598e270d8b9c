"""An example plugin: the job type `hello` greets a list of names, one checkpointed step per name."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from jobrunner import Handler, JobContext, JobRequest, PermanentError


class HelloRequest(JobRequest):
    type: Literal["hello"]
    names: list[str] = Field(min_length=1, max_length=1000, description="Who to greet.")
    greeting: str = "Hello"


async def greet(request: HelloRequest, ctx: JobContext) -> dict[str, object]:
    greeted = []
    for i, name in enumerate(request.names):
        if not name.strip():
            raise PermanentError(f"names[{i}] is blank")  # retrying cannot fix the request

        def say(name: str = name) -> str:  # a paid API call would go here (ctx.http is an httpx client)
            return f"{request.greeting}, {name}!"

        # a step that completed in an earlier attempt returns its stored result without running again
        greeted.append(await ctx.step(f"greet:{name}", say))
        ctx.progress(i + 1, len(request.names))
        ctx.log.info("greeted %s", name)
    return {"greeted": len(greeted), "last": greeted[-1]}


HELLO = Handler("hello", HelloRequest, greet, "Greets names (an example plugin).")
