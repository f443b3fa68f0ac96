"""Why the pipeline refuses an operator's request (manual trigger, categorization); each names the
request field at fault so the API can answer with it."""

from __future__ import annotations


class PipelineError(Exception):
    """A refused operator request; ``field`` names the request field at fault (for the API)."""

    field: str | None = None


class UnknownWorkflow(PipelineError):
    field = "workflow"


class UnknownMachine(PipelineError):
    field = "machine"


class WorkflowDisabled(PipelineError):
    field = "workflow"


class NotManual(PipelineError):
    field = "workflow"


class OutOfScope(PipelineError):
    field = "machine"


class Throttled(PipelineError):
    field = "workflow"


class NotDurable(PipelineError):
    """The outbox cannot store the request now (disk full, I/O error): nothing was accepted."""

    field = None
