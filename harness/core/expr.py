"""Tiny expressions over a model config, used by specs to say where sizes come from.

A spec field such as ``kv.heads`` is a list of candidates tried in order; the first that applies
wins. Each candidate is one of::

    num_key_value_heads                      # a config attribute
    hidden_size / num_attention_heads        # integer division of two attributes
    multi_query_group_num if multi_query_attention   # only when the flag attribute is truthy
    7                                        # a literal integer

Parsing happens when the spec loads (so a typo is an error naming the field); evaluation happens
against a real config.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_TERM = rf"(?:{_NAME}|\d+)"
_PATTERN = re.compile(rf"^\s*(?P<a>{_TERM})\s*(?:(?P<op>[/*])\s*(?P<b>{_TERM}))?\s*(?:if\s+(?P<flag>{_NAME}))?\s*$")


class ExprError(ValueError):
    pass


@dataclass(frozen=True)
class ConfigExpr:
    text: str
    a: str
    op: str | None = None
    b: str | None = None
    flag: str | None = None

    @classmethod
    def parse(cls, text) -> "ConfigExpr":
        if isinstance(text, bool) or not isinstance(text, (str, int)):
            raise ExprError(f"expected a config attribute name or 'a / b', got {text!r}")
        m = _PATTERN.match(str(text))
        if not m:
            raise ExprError(
                f"cannot read {text!r}: write an attribute (num_key_value_heads), "
                "'a / b' (hidden_size / num_attention_heads), or 'attr if flag'"
            )
        return cls(str(text), m["a"], m["op"], m["b"], m["flag"])

    def names(self) -> list[str]:
        return [t for t in (self.a, self.b, self.flag) if t and not t.isdigit()]

    def applies(self, config) -> bool:
        """True when every attribute exists and the flag (if any) is truthy."""
        if any(getattr(config, n, None) is None for n in self.names()):
            return False
        return self.flag is None or bool(getattr(config, self.flag))

    def evaluate(self, config) -> int:
        def term(t: str) -> int:
            return int(t) if t.isdigit() else int(getattr(config, t))

        a = term(self.a)
        if self.op is None:
            return a
        b = term(self.b)
        if self.op == "*":
            return a * b
        if a % b:
            raise ExprError(f"{self.text}: {a} is not divisible by {b}")
        return a // b

    def __str__(self) -> str:
        return self.text


def first_applicable(candidates: tuple[ConfigExpr, ...], config) -> int:
    for c in candidates:
        if c.applies(config):
            return c.evaluate(config)
    tried = ", ".join(str(c) for c in candidates)
    raise ExprError(f"none of [{tried}] applies to this config (missing attributes or flags off)")
