"""Tiny expressions over a model config, used by specs to say where sizes come from.

A spec field such as ``kv.heads`` is a list of candidates tried in order; the first that applies
wins. Each candidate is one of::

    num_key_value_heads                      # a config attribute
    text_config.num_key_value_heads          # an attribute of a sub-config (composite configs)
    hidden_size / num_attention_heads        # integer division of two attributes
    multi_query_group_num if multi_query_attention   # only when the flag attribute is truthy
    7                                        # a literal integer

Every attribute may be a dotted path into sub-configs (``text_config.head_dim``): multimodal and
other composite configs keep the language model's sizes one level down. Parsing happens when the
spec loads (so a typo is an error naming the field); evaluation happens against a real config.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_PATH = rf"{_NAME}(?:\.{_NAME})*"  # attribute, or sub_config.attribute (any depth)
_TERM = rf"(?:{_PATH}|\d+)"
_PATTERN = re.compile(rf"^\s*(?P<a>{_TERM})\s*(?:(?P<op>[/*])\s*(?P<b>{_TERM}))?\s*(?:if\s+(?P<flag>{_PATH}))?\s*$")


class ExprError(ValueError):
    pass


_MISSING = object()


def resolve(config, path: str):
    """The value at a dotted attribute path (``text_config.head_dim``), or ``_MISSING`` when a step
    is absent. A step may be a sub-config object or, as some configs keep them, a plain dict."""
    value = config
    for step in path.split("."):
        if isinstance(value, dict):
            value = value.get(step, _MISSING)
        else:
            value = getattr(value, step, _MISSING)
        if value is _MISSING:
            return _MISSING
    return value


def missing_step(config, path: str) -> str | None:
    """Where a dotted path breaks: ``'text_config has no num_kv_heads'`` (None when it resolves)."""
    value, seen = config, []
    for step in path.split("."):
        nxt = value.get(step, _MISSING) if isinstance(value, dict) else getattr(value, step, _MISSING)
        if nxt is _MISSING:
            return f"{'.'.join(seen) or type(config).__name__} has no {step!r}"
        seen.append(step)
        value = nxt
    return None


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
                f"cannot read {text!r}: write an attribute (num_key_value_heads, text_config.num_key_value_heads), "
                "'a / b' (hidden_size / num_attention_heads), or 'attr if flag'"
            )
        return cls(str(text), m["a"], m["op"], m["b"], m["flag"])

    def names(self) -> list[str]:
        """The attribute paths this expression reads (dotted for sub-config attributes)."""
        return [t for t in (self.a, self.b, self.flag) if t and not t.isdigit()]

    def applies(self, config) -> bool:
        """True when every attribute exists (not None) and the flag (if any) is truthy."""
        if any(resolve(config, n) in (None, _MISSING) for n in self.names()):
            return False
        return self.flag is None or bool(resolve(config, self.flag))

    def why_not(self, config) -> str:
        """Why this candidate does not apply (empty when it does): the missing step or the flag."""
        for n in self.names():
            broken = missing_step(config, n)
            if broken:
                return broken
            if resolve(config, n) is None:
                return f"{n} is None"
        if self.flag is not None and not resolve(config, self.flag):
            return f"flag {self.flag} is off"
        return ""

    def evaluate(self, config) -> int:
        def term(t: str) -> int:
            if t.isdigit():
                return int(t)
            value = resolve(config, t)
            if value is _MISSING:
                raise ExprError(f"{self.text}: {missing_step(config, t)}")
            return int(value)

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
    why = "; ".join(f"{c}: {c.why_not(config)}" for c in candidates)
    raise ExprError(f"none of [{tried}] applies to this config (missing attributes or flags off: {why})")
