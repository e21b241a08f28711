"""Key-mapping rules and the conversion report.

A rule matches source keys by a regular expression and says what becomes of them: renamed (or kept, when the name
does not change) to one target, split along dim 0 into several targets, or dropped, each with a reason. A key that
no rule matches is refused. The report lists what every key became, so nothing is loaded or lost silently.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

ACTIONS = ("kept", "renamed", "split", "dropped", "refused")


class ConversionError(ValueError):
    """A checkpoint that cannot be converted faithfully; the message names the problem and the fix."""


@dataclass(frozen=True)
class Rule:
    """`pattern` (full match) -> `target` (a `re` template with \\1..), a tuple of targets (split into equal or
    `sizes` parts along dim 0), or None (dropped for `reason`). `transform` reshapes the tensor (renames only)."""

    name: str
    pattern: str
    target: str | tuple[str, ...] | None
    reason: str = ""
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None


@dataclass
class ConversionReport:
    """What every source key became: action -> [(source, target or reason, rule name)]."""

    entries: dict[str, list[tuple[str, str, str]]] = field(default_factory=lambda: {a: [] for a in ACTIONS})
    notes: list[str] = field(default_factory=list)

    def add(self, action: str, source: str, target: str, rule: str) -> None:
        self.entries[action].append((source, target, rule))

    def count(self, action: str) -> int:
        return len(self.entries[action])

    def rules_used(self, action: str) -> set[str]:
        return {rule for _, _, rule in self.entries[action]}

    def format(self, examples: int = 3) -> str:
        lines = []
        for action in ACTIONS:
            items = self.entries[action]
            if not items and action == "refused":
                continue
            lines.append(f"{action:8s} {len(items):6d}")
            by_rule: dict[str, list[tuple[str, str]]] = {}
            for source, target, rule in items:
                by_rule.setdefault(rule, []).append((source, target))
            for rule, pairs in sorted(by_rule.items()):
                shown = "; ".join(f"{s} -> {t}" if action != "dropped" else s for s, t in pairs[:examples])
                more = f" (+{len(pairs) - examples} more)" if len(pairs) > examples else ""
                reason = f" [{pairs[0][1]}]" if action in ("dropped", "refused") else ""
                lines.append(f"    {rule} ({len(pairs)}){reason}: {shown}{more}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def apply_rules(state: dict[str, torch.Tensor], rules: list[Rule], report: ConversionReport,
                what: str) -> dict[str, torch.Tensor]:
    """Map `state` by the first matching rule per key. Unmatched keys are refused: all of them are listed in one
    error after the whole dict was seen."""
    compiled = [(re.compile(rule.pattern), rule) for rule in rules]
    out: dict[str, torch.Tensor] = {}
    refused = []
    for key, tensor in state.items():
        for regex, rule in compiled:
            match = regex.fullmatch(key)
            if match is None:
                continue
            if rule.target is None:
                report.add("dropped", key, rule.reason, rule.name)
            elif isinstance(rule.target, tuple):
                names = [match.expand(t) for t in rule.target]
                if tensor.shape[0] % len(names):
                    raise ConversionError(f"{what}: {key} {tuple(tensor.shape)} does not split into {len(names)} "
                                          "equal parts along dim 0")
                for name, part in zip(names, tensor.chunk(len(names)), strict=True):
                    out[name] = part.contiguous()
                report.add("split", key, " + ".join(names), rule.name)
            else:
                name = match.expand(rule.target)
                out[name] = rule.transform(tensor) if rule.transform else tensor
                report.add("kept" if name == key else "renamed", key, name, rule.name)
            break
        else:
            refused.append(key)
            report.add("refused", key, "no rule", "unknown key")
    if refused:
        raise ConversionError(
            f"{what}: {len(refused)} key(s) match no conversion rule: {', '.join(refused[:10])}"
            f"{' ...' if len(refused) > 10 else ''}. They do not come from a released VGT model of this kind; "
            "check that the file and --kind/backbone match (an AR iter_*.pth vs a VGT-AE .pth, InternVL vs Qwen)"
        )
    return out


def check_against(converted: dict[str, torch.Tensor], expected: dict[str, torch.Size], what: str,
                  fix: str) -> None:
    """Converted keys and shapes must be exactly those of the vgt module that receives them."""
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    mismatched = [f"{k} {tuple(converted[k].shape)} vs {tuple(expected[k])}"
                  for k in sorted(set(expected) & set(converted)) if tuple(converted[k].shape) != tuple(expected[k])]
    problems = [f"{name} ({len(v)}): {', '.join(v[:6])}{' ...' if len(v) > 6 else ''}"
                for name, v in (("missing", missing), ("unexpected", unexpected), ("mismatched", mismatched)) if v]
    if problems:
        raise ConversionError(f"{what} does not fit the vgt model built for it: {'; '.join(problems)}. {fix}")
