"""The demo's data and its stand-in for a language model: sample support tickets and a deterministic drafter."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

SUPPORT_QUEUE = "support"  # tickets waiting for a drafted reply (the agent's queue)
FILING_QUEUE = "filing"  # drafted replies waiting to be filed (the automation's queue)

SAMPLE_TICKETS: list[dict[str, str]] = [
    {
        "customer": "Ada Lovelace",
        "email": "ada@example.com",
        "subject": "Refund for a double charge",
        "body": "I was charged twice for my March invoice. Could you refund the second payment?",
    },
    {
        "customer": "Grace Hopper",
        "email": "grace@example.com",
        "subject": "Cannot log in",
        "body": "The password reset email never arrives, so I am locked out of my account.",
    },
    {
        "customer": "Alan Turing",
        "email": "alan@example.com",
        "subject": "Where is my order?",
        "body": "Order 5521 was supposed to ship last week and the tracking page shows nothing.",
    },
    {
        "customer": "Katherine Johnson",
        "email": "katherine@example.com",
        "subject": "Export crashes",
        "body": "Exporting a report to CSV crashes the app with an error every time since the update.",
    },
    {
        "customer": "Edsger Dijkstra",
        "email": "edsger@example.com",
        "subject": "Question about plans",
        "body": "Does the team plan include single sign-on, or do we need the enterprise plan for that?",
    },
]

CATEGORIES: list[tuple[str, tuple[str, ...], str]] = [
    (
        "billing",
        ("refund", "charge", "invoice", "payment"),
        "I've asked our billing team to refund the duplicate charge; you'll see it back on your statement "
        "within 5 business days.",
    ),
    (
        "account",
        ("password", "log in", "login", "locked"),
        "I've sent a fresh password reset link from a new address; please check your spam folder if it "
        "doesn't arrive within a few minutes.",
    ),
    (
        "shipping",
        ("order", "ship", "tracking", "delivery"),
        "I've checked with the warehouse: your order is packed and will leave today, and the tracking link "
        "will update by tonight.",
    ),
    (
        "bug",
        ("crash", "error", "bug", "broken"),
        "Thanks for the report. Our engineers have reproduced the problem and a fix is on its way; meanwhile "
        "exporting to XLSX works as a workaround.",
    ),
]
GENERAL = "Good question! I've passed it to the right team and we'll get back to you with the details within a day."


@dataclass(frozen=True)
class Draft:
    category: str
    text: str
    prompt_tokens: int
    completion_tokens: int

    @property
    def cost(self) -> float:
        """What the call would have cost at $0.50 / $1.50 per million prompt / completion tokens."""
        return round((self.prompt_tokens * 0.5 + self.completion_tokens * 1.5) / 1_000_000, 8)


def tokens(text: str) -> int:
    """A rough token count (words and punctuation), standing in for a tokenizer."""
    return len(re.findall(r"\w+|[^\w\s]", text))


def compose_reply(ticket: dict[str, Any]) -> Draft:
    """Draft a reply to a ticket. Deterministic: the same ticket always gets the same draft."""
    text = f"{ticket.get('subject', '')} {ticket.get('body', '')}".lower()
    category, answer = "general", GENERAL
    for name, keywords, reply in CATEGORIES:
        if any(word in text for word in keywords):
            category, answer = name, reply
            break
    first_name = str(ticket.get("customer", "there")).split()[0]
    reply_text = f'Hi {first_name},\n\nThanks for contacting us about "{ticket.get("subject", "your request")}". '
    reply_text += f"{answer}\n\nBest regards,\nThe Support Team"
    prompt = f"Reply to this support ticket.\nSubject: {ticket.get('subject')}\n{ticket.get('body')}"
    return Draft(category, reply_text, tokens(prompt), tokens(reply_text))
