"""Executions and everything they produce. Rows here are projections of the event log, kept
current by ``persistence.events.DjangoEventSink`` in the same transaction that appends each event."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from executions.kernel import ids
from executions.kernel.state import TERMINAL_EXECUTION_STATES, ExecutionState
from tenants.models import Tenant


class ExecutionQuerySet(models.QuerySet["Execution"]):
    def for_tenant(self, tenant: Tenant) -> ExecutionQuerySet:
        return self.filter(tenant=tenant)

    def active(self) -> ExecutionQuerySet:
        """Executions that occupy a slot of their tenant: running, or claimed by a worker.

        Both arms name their states, so the (tenant, state) index answers it without reading the
        tenant's finished executions, however many there are."""
        s = Execution.State
        claimable = (s.QUEUED, s.CREATED, s.PLANNING, s.PAUSED, s.WAITING)
        return self.filter(Q(state=s.RUNNING) | Q(state__in=claimable, lease_owner__gt=""))


# The kernel owns the states; the model's choices are derived from them, never listed again.
ExecutionStateChoices = models.TextChoices(  # type: ignore[call-overload]  # stubs lack the functional form
    "State", [(s.name, s.value) for s in ExecutionState]
)


class Execution(models.Model):
    State = ExecutionStateChoices
    TERMINAL = tuple(ExecutionStateChoices(s.value) for s in TERMINAL_EXECUTION_STATES)

    id = models.CharField(primary_key=True, max_length=40, default=ids.new_execution_id, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="executions")
    # What it runs: a blueprint (built in, or the tenant's own) at the version it was submitted with.
    blueprint = models.CharField(max_length=200)
    blueprint_version = models.PositiveIntegerField(null=True, blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED)
    wait_reason = models.CharField(max_length=32, blank=True)
    wait_detail = models.JSONField(null=True, blank=True)
    input = models.JSONField(null=True, blank=True)
    output = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    usage = models.JSONField(default=dict, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="children")

    class Origin(models.TextChoices):
        SUBMIT = "submit"  # the API, the dashboard or the CLI
        CHILD = "child"  # a step of its parent started it
        SCHEDULE = "schedule"  # a schedule of the tenant fired
        RERUN = "rerun"  # the same blueprint version and input as ``source``
        FORK = "fork"  # ``source``'s run from one of its steps' checkpoints

    # Who or what started it; a rerun or a fork names the execution it came from. Deleting that
    # one keeps this one (its own events and steps), without the link.
    origin = models.CharField(max_length=16, choices=Origin.choices, default=Origin.SUBMIT)
    source = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="derived")
    # The schedule whose firing this is (origin ``schedule``); deleting the schedule keeps it.
    schedule = models.ForeignKey(
        "Schedule", null=True, blank=True, on_delete=models.SET_NULL, related_name="executions"
    )
    # A URL called, signed, when it ends: its submission's ``webhook`` (services/webhooks.py).
    webhook = models.CharField(max_length=2000, blank=True, default="")
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The API key a program submitted it with (a revoked key stays named; a deleted one is gone).
    created_by_key = models.ForeignKey(
        "tenants.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    # Worker coordination. A worker owns an execution while its lease holds; it renews the lease
    # with heartbeats, and the reaper hands executions with expired leases to another worker.
    lease_owner = models.CharField(max_length=100, blank=True, default="")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    claims = models.PositiveIntegerField(default=0)
    # Requests recorded durably so they survive a worker's death; the worker acts on them.
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    cancel_reason = models.CharField(max_length=500, blank=True)
    resume_requested = models.BooleanField(default=False)
    resume_input = models.JSONField(null=True, blank=True)
    # The seq of the waiting event last answered: the state stays ``waiting`` until the resumed
    # run says otherwise, and a second answer to the same question must be refused meanwhile.
    answered_wait_seq = models.PositiveIntegerField(null=True, blank=True)

    objects = ExecutionQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["tenant", "-created_at"], name="exec_tenant_newest"),
            models.Index(fields=["tenant", "state", "-created_at"], name="exec_tenant_state_newest"),
            models.Index(fields=["state", "lease_expires_at"], name="exec_state_lease"),
            models.Index(fields=["tenant", "blueprint", "-created_at"], name="exec_tenant_blueprint_newest"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="one_execution_per_idempotency_key",
            )
        ]

    def __str__(self) -> str:
        return self.id

    @property
    def is_terminal(self) -> bool:
        return self.state in self.TERMINAL

    @property
    def has_live_lease(self) -> bool:
        """Whether a worker holds the execution now (its lease has not expired)."""
        return bool(self.lease_owner) and self.lease_expires_at is not None and self.lease_expires_at > timezone.now()

    @property
    def child_waited_for(self) -> str | None:
        """The id of the child execution this one waits for, if it waits for one."""
        prompt = (self.wait_detail or {}).get("prompt")
        if self.state == self.State.WAITING and self.wait_reason == "sub_agent" and isinstance(prompt, dict):
            return prompt.get("child_id")
        return None


class Step(models.Model):
    id = models.CharField(primary_key=True, max_length=40, editable=False)
    execution = models.ForeignKey(Execution, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveIntegerField()
    name = models.CharField(max_length=200)
    step_type = models.CharField(max_length=32)
    state = models.CharField(max_length=16)
    attempt = models.PositiveIntegerField(default=1)
    parent_step_id = models.CharField(max_length=40, blank=True, default="")
    output = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["execution", "position"]
        constraints = [models.UniqueConstraint(fields=["execution", "position"], name="one_step_per_position")]

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"


class ExecutionEvent(models.Model):
    """The append-only event log: authoritative, gap-free ``seq`` per execution."""

    # An integer key gives the relay a cheap "rows after N" cursor.
    pk_id = models.BigAutoField(primary_key=True)
    id = models.CharField(max_length=40, unique=True)
    execution = models.ForeignKey(Execution, on_delete=models.CASCADE, related_name="events")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    seq = models.PositiveIntegerField()
    type = models.CharField(max_length=48)
    step_id = models.CharField(max_length=40, blank=True, default="")
    timestamp = models.DateTimeField()
    data = models.JSONField(default=dict)

    class Meta:
        ordering = ["execution", "seq"]
        constraints = [models.UniqueConstraint(fields=["execution", "seq"], name="one_event_per_seq")]
        # One step's events (a fork's starting point, a model step's exchange) without reading
        # the whole execution's log.
        indexes = [models.Index(fields=["execution", "step_id", "seq"], name="event_by_step")]

    def __str__(self) -> str:
        return f"{self.execution_id}#{self.seq} {self.type}"


class Artifact(models.Model):
    id = models.CharField(primary_key=True, max_length=40, editable=False)
    execution = models.ForeignKey(Execution, on_delete=models.CASCADE, related_name="artifacts")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    step_id = models.CharField(max_length=40, blank=True, default="")
    name = models.CharField(max_length=255)
    artifact_type = models.CharField(max_length=32)
    content_type = models.CharField(max_length=100)
    size = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)
    metadata = models.JSONField(default=dict, blank=True)
    # Small content lives in the row; larger content in Django's default storage.
    content = models.BinaryField(null=True, blank=True)
    file = models.FileField(upload_to="artifacts/%Y/%m/%d/", null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["execution", "created_at"], name="artifact_execution_order")]

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"


class InboxMessage(models.Model):
    id = models.CharField(primary_key=True, max_length=40, default=ids.new_message_id, editable=False)
    execution = models.ForeignKey(Execution, on_delete=models.CASCADE, related_name="inbox")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=16)
    payload = models.JSONField()
    actor = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    consumed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["execution", "consumed_at"], name="inbox_pending")]

    def __str__(self) -> str:
        return f"{self.kind} for {self.execution_id}"


class Checkpoint(models.Model):
    """The latest resume point of an execution (one row, replaced after every step)."""

    execution = models.OneToOneField(Execution, on_delete=models.CASCADE, primary_key=True, related_name="checkpoint")
    checkpoint_id = models.CharField(max_length=40)
    seq = models.PositiveIntegerField()
    data = models.JSONField()
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"checkpoint of {self.execution_id} at #{self.seq}"


class PastCheckpoint(models.Model):
    """Every checkpoint an execution took, in the order taken: where a fork starts from.

    ``Checkpoint`` keeps the latest (what a resume reads); these are written with it, in the same
    statement, and go with the execution."""

    pk_id = models.BigAutoField(primary_key=True)
    execution = models.ForeignKey(Execution, on_delete=models.CASCADE, related_name="past_checkpoints")
    checkpoint_id = models.CharField(max_length=40)
    seq = models.PositiveIntegerField()
    data = models.JSONField()
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["execution", "seq", "pk_id"]
        indexes = [models.Index(fields=["execution", "seq"], name="past_checkpoint_by_seq")]

    def __str__(self) -> str:
        return f"checkpoint {self.checkpoint_id} of {self.execution_id} at #{self.seq}"


class Blueprint(models.Model):
    """A graph a tenant defines as JSON. Never edited in place: every save is a new version."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="blueprints")
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    latest_version = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["tenant", "name"]
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="one_blueprint_name_per_tenant")]

    def __str__(self) -> str:
        return f"{self.name} v{self.latest_version}"


class BlueprintVersion(models.Model):
    """One saved definition of a blueprint; an execution records the version it ran."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    blueprint = models.ForeignKey(Blueprint, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    definition = models.JSONField()
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["blueprint", "-version"]
        constraints = [models.UniqueConstraint(fields=["blueprint", "version"], name="one_row_per_blueprint_version")]

    def __str__(self) -> str:
        return f"{self.blueprint.name} v{self.version}"


class ModelPrice(models.Model):
    """What a model costs, set by operators; ``llm`` nodes record cost from it so cost limits bite.

    ``model`` is the name an ``llm`` node gives (``gpt-4o-mini``, ``demo``); a node whose model has
    no price records tokens and a cost of 0."""

    model = models.CharField(max_length=200, unique=True)
    input_usd_per_million = models.DecimalField(max_digits=12, decimal_places=4, default=0)
    output_usd_per_million = models.DecimalField(max_digits=12, decimal_places=4, default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["model"]

    def __str__(self) -> str:
        return self.model

    def cost_usd(self, input_tokens: int, output_tokens: int) -> float:
        per_token = input_tokens * self.input_usd_per_million + output_tokens * self.output_usd_per_million
        return float(per_token / 1_000_000)


class WorkerHeartbeat(models.Model):
    """A worker process saying it is alive, every heartbeat: what readiness and metrics count."""

    worker = models.CharField(primary_key=True, max_length=200)  # host:pid
    last_seen = models.DateTimeField(db_index=True)
    running = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.worker} at {self.last_seen}"


class Schedule(models.Model):
    """A blueprint run with this input at the times of a cron expression in an IANA time zone, or
    every ``interval_seconds``. Each firing is a submission (``services.submit``) with the
    schedule as its origin, so the tenant's limits and quotas apply; a refused firing is recorded
    in ``last_error``, and the schedule goes on. Workers fire it (``runtime/scheduler.py``).

    - Cron times are wall-clock times in ``timezone``: a time that occurs twice (clocks go back)
      fires once, at its first occurrence; a time that does not exist (clocks go forward) fires
      as the gap ends, shifted by its length; no instant fires twice. Intervals are counted in
      UTC from the Unix epoch (every 3600 s fires on the hour), so time zones do not move them.
    - Overlap, when a firing comes while an earlier firing's execution is unfinished: ``skip``
      submits nothing, ``queue`` submits anyway, ``cancel_previous`` cancels the unfinished ones
      and submits.
    - Catch-up after downtime (no worker ran when times came due): the missed times fire once in
      all, as one execution for the earliest of them (its ``metadata.schedule`` has that
      ``scheduled_at`` and how many more were ``missed``), then the schedule keeps its regular
      times after now. So workers down for a day start one run of an hourly schedule, not 24.
    - Paused, a schedule fires nothing; its times while paused are not missed: resumed, it fires
      at its first time after the resume.
    """

    class Overlap(models.TextChoices):
        SKIP = "skip"
        QUEUE = "queue"
        CANCEL_PREVIOUS = "cancel_previous"

    id = models.CharField(primary_key=True, max_length=40, default=ids.new_schedule_id, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="schedules")
    name = models.CharField(max_length=100)
    blueprint = models.CharField(max_length=200)
    blueprint_version = models.PositiveIntegerField(null=True, blank=True)  # none: the latest
    input = models.JSONField(null=True, blank=True)
    cron = models.CharField(max_length=200, blank=True)
    timezone = models.CharField(max_length=64, default="UTC")
    interval_seconds = models.PositiveIntegerField(null=True, blank=True)
    overlap = models.CharField(max_length=16, choices=Overlap.choices, default=Overlap.SKIP)
    paused = models.BooleanField(default=False)
    next_fire_at = models.DateTimeField(null=True, blank=True)
    last_fired_at = models.DateTimeField(null=True, blank=True)
    last_error = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["paused", "next_fire_at"], name="schedule_due")]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="one_schedule_name_per_tenant"),
            models.CheckConstraint(
                condition=(Q(interval_seconds__isnull=True) & ~Q(cron=""))
                | (Q(interval_seconds__isnull=False) & Q(cron="")),
                name="schedule_cron_or_interval",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class WebhookEndpoint(models.Model):
    """A URL of the tenant's called with a signed POST when one of its executions has one of
    ``events`` (event types such as ``data-execution-end``). The secret signs each body; it is
    shown once, when made, and kept encrypted (``tenants.secrets``). Sending: services/webhooks.py."""

    id = models.CharField(primary_key=True, max_length=40, default=ids.new_webhook_id, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="webhooks")
    url = models.CharField(max_length=2000)
    events = models.JSONField(default=list)
    description = models.CharField(max_length=500, blank=True, default="")
    secret_ciphertext = models.TextField(editable=False)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["tenant", "active"], name="webhook_tenant_active")]

    def __str__(self) -> str:
        return f"{self.url} ({self.id})"


class WebhookSigningSecret(models.Model):
    """The tenant's secret for the per-submission ``webhook`` URLs that are none of its endpoints."""

    tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="webhook_signing_secret")
    secret_ciphertext = models.TextField(editable=False)
    created_at = models.DateTimeField(auto_now=True)


class WebhookDelivery(models.Model):
    """One event sent to one URL: pending until a 2xx answer (delivered) or until it is given up
    (failed). ``next_attempt_at`` is also the claim: a worker sending it moves it past the send's
    timeout, so no other worker takes it meanwhile."""

    class State(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"

    id = models.CharField(primary_key=True, max_length=40, default=ids.new_delivery_id, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="webhook_deliveries")
    # None: the execution's own ``webhook`` URL, not one of the tenant's endpoints.
    endpoint = models.ForeignKey(
        WebhookEndpoint, null=True, blank=True, on_delete=models.CASCADE, related_name="deliveries"
    )
    execution = models.ForeignKey(Execution, on_delete=models.CASCADE, related_name="webhook_deliveries")
    url = models.CharField(max_length=2000)
    event_type = models.CharField(max_length=64)
    event_id = models.CharField(max_length=40)
    # The body, made at its first attempt and sent unchanged by every retry.
    payload = models.JSONField(null=True, blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    last_status = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=1000, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["state", "next_attempt_at"], name="webhook_delivery_due"),
            models.Index(fields=["endpoint", "-created_at"], name="webhook_delivery_endpoint"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["event_id", "url"], name="one_delivery_per_event_and_url"),
        ]

    def __str__(self) -> str:
        return self.id


class WebhookAttempt(models.Model):
    """One try at sending a delivery, and what came of it."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    status_code = models.PositiveIntegerField(null=True, blank=True)
    response_body = models.TextField(blank=True, default="")  # its first bytes
    error = models.CharField(max_length=1000, blank=True, default="")
    duration_ms = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["delivery", "number"]
        constraints = [models.UniqueConstraint(fields=["delivery", "number"], name="one_attempt_number_per_delivery")]
