"""The one answer to "may this outcome's model become champion, and may its list go out?".

Every command asks this object: ``phm audit`` (champion moves only where it says yes), ``phm
run`` and its flow (no list is published while any outcome is refused), ``phm score`` (a
candidate the decision refused is never scored) and ``phm review`` (which records a sign-off).

The rule, per outcome:
- PASS: yes;
- WARN or FAIL: yes only with a named reviewer's sign-off that covers the outcome and accepts
  that level ([[audit.signoff]] in the configuration, ``phm review``, or ``phm demo``'s labelled
  demo reviewer); otherwise no;
- and never while a named reviewer blocks the outcome ([[audit.block]]): a block is a reviewer's
  no, for a harm they see that the gate did not judge so, and no result or sign-off overrides it.

And one exit code for every command: 0 when every outcome may go out, 7 (FairnessGateFailed)
when any may not; the message says which outcomes, whether they FAILed or await sign-off, and
how to sign off.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from models.fairness._gate import GateResult, worst
from models.fairness._settings import GATE_LEVELS, Block, SignOff
from phm.exceptions import FairnessGateFailed

# model-version tags: what the decision said (phm score reads them)
TAG_GATE = "phm.fairness_gate"
TAG_MAY_PUBLISH = "phm.fairness_gate.may_publish"
NOT_AUDITED = "not audited"  # what training tags a newly registered version with
TAG_REVIEWER = "phm.signoff.reviewer"
TAG_REASON = "phm.signoff.reason"
TAG_SOURCE = "phm.signoff.source"
TAG_RANKS_LIST = "phm.ranks_list"  # "model", or the validated score that ranks the list instead
TAG_BLOCKED_BY = "phm.blocked_by"  # the reviewer who blocked the outcome's list ([[audit.block]])
TAG_BLOCK_REASON = "phm.block.reason"
HOW_TO_UNBLOCK = "the reviewer who blocked it removes their [[audit.block]] from the configuration"
HOW_TO_SIGN_OFF = ("a named reviewer can sign off with [[audit.signoff]] (reviewer, reason, accepts, outcomes) "
                   "in --config, or with phm review; see docs/fairness.md")


def _applies(signoff: SignOff, result: GateResult) -> bool:
    return signoff.covers(result.outcome) and result.status != "PASS" and \
        GATE_LEVELS.index(result.status) <= GATE_LEVELS.index(signoff.accepts)


@dataclass
class GateDecision:
    results: list[GateResult]
    standards: dict = field(default_factory=dict)  # outcome -> _standard.StandardComparison

    def ranks_list(self, outcome: str) -> str:
        """"model", or the validated score (QRISK3-2017, QDiabetes-2018) that ranks the outcome's
        list because the trained model was worse than it for a group (do no harm)."""
        comparison = self.standards.get(outcome)
        return comparison.ranks_list if comparison is not None else "model"

    def becomes_champion(self, outcome: str) -> bool:
        return self.may_publish(outcome) and self.ranks_list(outcome) == "model"

    def result(self, outcome: str) -> GateResult:
        for r in self.results:
            if r.outcome == outcome:
                return r
        raise KeyError(outcome)

    def may_publish(self, outcome: str) -> bool:
        return self.result(outcome).accepted

    @property
    def refused(self) -> list[GateResult]:
        return [r for r in self.results if not r.accepted]

    @property
    def exit_code(self) -> int:
        return FairnessGateFailed.exit_code if self.refused else 0

    @property
    def demo_signed(self) -> bool:
        return any(r.signoff is not None and r.signoff.is_demo and r.status != "PASS" for r in self.results)

    def reasons(self, limit: int = 3) -> list[str]:
        blocked = [f"{r.outcome} blocked by {r.block.reviewer}: {r.block.reason}" for r in self.refused
                   if r.block is not None]
        return (blocked + [f.message for r in self.refused if r.block is None
                           for f in r.findings if f.level == r.status])[:limit]

    def raise_if_refused(self, consequence: str, report: object | None = None) -> None:
        refused = self.refused
        if not refused:
            return
        parts = [f"{r.outcome} {r.status}" + (f", blocked by {r.block.reviewer}" if r.block is not None else
                                              "" if r.status == "FAIL" else " awaiting a reviewer's sign-off")
                 for r in refused]
        where = f"; see {report}" if report else ""
        how = "; ".join(([HOW_TO_SIGN_OFF] if any(r.block is None for r in refused) else [])
                        + ([HOW_TO_UNBLOCK] if any(r.block is not None for r in refused) else []))
        raise FairnessGateFailed(f"the fairness gate refused {', '.join(parts)} ({'; '.join(self.reasons())}): "
                                 f"{consequence}; {how}{where}")

    def lines(self) -> list[str]:
        out = []
        for r in self.results:
            if r.block is not None:
                out.append(f"  {r.outcome}: {r.status}, BLOCKED by {r.block.reviewer} ({r.block.source}): "
                           f"{r.block.reason}: champion not moved, no list may go out")
                continue
            if r.status == "PASS":
                continue
            if r.accepted:
                demo = " [DEMO SIGN-OFF: synthetic run, not a real review]" if r.signoff.is_demo else ""
                out.append(f"  {r.outcome}: {r.status} signed off by {r.signoff.reviewer} "
                           f"({r.signoff.source}){demo}: {r.signoff.reason}")
            else:
                out.append(f"  {r.outcome}: {r.status}, not signed off: champion not moved, no list may go out")
        for outcome, comparison in self.standards.items():
            if comparison.model_is_worse:
                out.append(f"  {outcome}: do no harm: {comparison.standard} ranks the list, not the trained model "
                           f"({'; '.join(comparison.reasons()[:2])})")
        return out

    def description(self, title: str, report_artifact: str) -> str:
        """The audit run's description in MLflow (Markdown; the ``mlflow.note.content`` tag the UI
        shows first on the run's page): what the run is, the decision per outcome in full (tags
        are cut short in the UI's tables), where the report is and how to sign off."""
        rows = ["| outcome | gate | may its list go out? | ranked by | signed off by | reason |", "|---|---|---|---|---|---|"]
        for r in self.results:
            signed = r.signoff is not None and r.status != "PASS"
            demo = " (DEMO SIGN-OFF, synthetic run)" if signed and r.signoff.is_demo else ""
            if r.block is not None:
                rows.append(f"| {r.outcome} | {r.status} | no: BLOCKED | {self.ranks_list(r.outcome)} | "
                            f"blocked by {r.block.reviewer} | {r.block.reason.replace('|', '/')} |")
                continue
            rows.append(f"| {r.outcome} | {r.status} | {'yes' if r.accepted else 'no'} | {self.ranks_list(r.outcome)} | "
                        f"{(r.signoff.reviewer + demo) if signed else ''} | "
                        f"{r.signoff.reason.replace('|', '/') if signed else ''} |")
        findings = [f"- {r.outcome} {f.level}: {f.message}" for r in self.results for f in r.findings
                    if f.level == r.status and r.status != "PASS"][:12]
        return "\n".join([
            f"**{title}**: {worst(self.results)}, " + ("every list may go out." if not self.refused else
                                                     "no list may go out until a named reviewer signs off."
                                                     if not any(r.block for r in self.refused) else
                                                     "no list may go out: a named reviewer blocked "
                                                     + ", ".join(r.outcome for r in self.refused if r.block) + "."),
            "", *rows, "",
            *(["What the gate found:", *findings, ""] if findings else []),
            f"**The report**: Artifacts tab, `{report_artifact}` (download it and open it in a browser); the "
            "figures behind it are in the JSON beside it, and each group's figures are in the Metrics tab "
            "(`<outcome>/<performance|selection>/<group>/<figure>`).", "",
            f"**Signing off** a WARN or FAIL: {HOW_TO_SIGN_OFF}. The decision is also on each audited model "
            "version in the registry (tags `phm.fairness_gate`, `phm.signoff.*`, and its description)."])

    def version_description(self, outcome: str, audit_run: str, ranks_list: str | None = None) -> str:
        """The audited model version's description in the registry: the decision, in words.
        ``ranks_list``: as the audit recorded it, where this decision was remade without it (phm review)."""
        r = self.result(outcome)
        ranks = ranks_list or self.ranks_list(outcome)
        text = (f"Audited in {audit_run}: {r.label()}. Its list may {'' if r.accepted else 'not '}go out"
                f"{'' if ranks == 'model' else f', ranked by {ranks} (do no harm)'}.")
        if r.signoff is not None and r.status != "PASS" and r.block is None:
            text += f" Signed off by {r.signoff.reviewer} ({r.signoff.source}): {r.signoff.reason}"
        if r.block is not None:
            text += f" Blocked by {r.block.reviewer} ({r.block.source}): {r.block.reason}"
        return text

    def manifest(self) -> dict:
        """For the lists' manifest and MLflow: per outcome, the result and who signed it off."""
        return {r.outcome: {"gate": r.status, "may_publish": r.accepted, "ranks_list": self.ranks_list(r.outcome),
                            "signoff": r.signoff.as_dict() if r.signoff is not None and r.status != "PASS" else None,
                            **({"blocked": r.block.as_dict()} if r.block is not None else {})}
                for r in self.results}

    def tags(self) -> dict[str, str]:
        """MLflow tags of the audit run."""
        tags = {}
        for r in self.results:
            tags[f"phm.fairness_gate.{r.outcome}"] = r.label()
            tags[f"phm.fairness_gate.{r.outcome}.may_publish"] = str(r.accepted).lower()
            tags[f"phm.ranks_list.{r.outcome}"] = self.ranks_list(r.outcome)
            if r.signoff is not None and r.status != "PASS":
                for key, value in (("reviewer", r.signoff.reviewer), ("reason", r.signoff.reason[:5000]),
                                   ("accepts", r.signoff.accepts), ("source", r.signoff.source)):
                    tags[f"phm.signoff.{r.outcome}.{key}"] = value
            if r.block is not None:
                for key, value in (("reviewer", r.block.reviewer), ("reason", r.block.reason[:5000]),
                                   ("source", r.block.source)):
                    tags[f"phm.block.{r.outcome}.{key}"] = value
        return tags

    def version_tags(self, outcome: str) -> dict[str, str]:
        """Tags of the audited model version (phm score reads ``may_publish``)."""
        r = self.result(outcome)
        tags = {TAG_GATE: r.label(), TAG_MAY_PUBLISH: str(r.accepted).lower(), TAG_RANKS_LIST: self.ranks_list(outcome)}
        if r.signoff is not None and r.status != "PASS":
            tags.update({TAG_REVIEWER: r.signoff.reviewer, TAG_REASON: r.signoff.reason[:5000],
                         TAG_SOURCE: r.signoff.source})
        if r.block is not None:
            tags.update({TAG_BLOCKED_BY: r.block.reviewer, TAG_BLOCK_REASON: r.block.reason[:5000]})
        return tags


def decide(results: list[GateResult], signoffs: tuple[SignOff, ...] | list[SignOff],
           standards: dict | None = None, blocks: tuple[Block, ...] | list[Block] = ()) -> GateDecision:
    """Apply the sign-offs (the first that covers each refused outcome) and the blocks (the first
    that covers each outcome, whatever its result) and return the decision."""
    for result in results:
        result.signoff = next((s for s in signoffs if _applies(s, result)), None)
        result.block = next((b for b in blocks if b.covers(result.outcome)), None)
    return GateDecision(results, standards or {})


def version_may_be_scored(tags: dict[str, str]) -> bool:
    """A registered version's own record of the decision (phm score's question). Versions that
    were never audited (no tag, or training's "not audited") may be scored only as a candidate,
    with a warning; one the audit refused may not."""
    if TAG_MAY_PUBLISH in tags:
        return tags[TAG_MAY_PUBLISH] == "true"
    gate = tags.get(TAG_GATE)
    return gate in (None, NOT_AUDITED, "PASS") or "signed off by" in gate or "accepted by" in gate
