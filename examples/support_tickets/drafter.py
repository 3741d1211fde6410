"""The agent: drafts a reply to each support ticket and reports its token usage.

    workloom worker drafter.py:app

The drafting here is a deterministic template (``tickets.compose_reply``) so the demo runs anywhere; a real
agent would call its language model at the marked spot and report the usage the model returns.
"""

from __future__ import annotations

from typing import Any

from tickets import SUPPORT_QUEUE, compose_reply

from workloom.worker import Job, NonRetryableError, Worker

app = Worker(name="support-drafter", kind="agent_session", concurrency=4)


@app.handler(SUPPORT_QUEUE)
async def draft_reply(job: Job) -> dict[str, Any]:
    ticket = job.data or {}
    if not ticket.get("body"):
        raise NonRetryableError("the ticket has no text to reply to")  # another attempt would not help
    await job.progress({"step": "drafting", "ticket": ticket.get("ticket")})

    # ---- This is where the LLM call goes, e.g. with an async SDK:
    #   response = await llm.messages.create(model=..., messages=[{"role": "user", "content": prompt}])
    #   job.usage(tokens=response.usage.input_tokens + response.usage.output_tokens, cost=...)
    # A rate-limit answer could `raise Release("rate limited")` to hand the ticket back without spending
    # an attempt; any other exception fails this attempt and the task is retried.
    draft = compose_reply(ticket)
    job.usage(
        tokens=draft.prompt_tokens + draft.completion_tokens,
        cost=draft.cost,
        prompt_tokens=draft.prompt_tokens,
        completion_tokens=draft.completion_tokens,
    )
    job.log.info("drafted a reply", extra={"ticket": ticket.get("ticket"), "category": draft.category})
    return {
        "ticket": ticket.get("ticket"),
        "to": ticket.get("email"),
        "category": draft.category,
        "reply": draft.text,
        "model": "template-v1",
    }
