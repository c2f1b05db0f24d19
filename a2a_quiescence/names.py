"""Every name that crosses a process or tool boundary, defined once.

Span names, attribute keys, header names, OTLP event names, Prometheus metric
names and alert names are imported from here by the instrumentation, the
collector, the rule/dashboard generators and the tests. A test checks that the
rules and dashboards only use metric names listed in ``EXPORTED_METRICS``.
"""

from __future__ import annotations

# --- instrumentation scope -------------------------------------------------
SCOPE = "a2a_quiescence"

# --- spans (fixed by the design card) --------------------------------------
SPAN_PRODUCER = "a2a.active_task.producer"
SPAN_QUEUE_CLOSE = "a2a.event_queue.close"
SPAN_HANDLER_ACLOSE = "a2a.request_handler.aclose"
SPAN_REGISTRY_ACLOSE = "a2a.active_task_registry.aclose"
SPAN_TASK_ACLOSE = "a2a.active_task.aclose"
# ours: one CLIENT span per push delivery (the webhook is not an A2A call)
SPAN_PUSH_SEND = "a2a.push_notification.send"
# ours: an asyncio task of a cascade garbage-collected while pending (ended at once, status ERROR)
SPAN_DESTROYED_PENDING = "a2a.task.destroyed_pending"
ATTR_DESTROYED_TRACE_ID = "trace_id"  # its span's (and its snapshot record's) cascade

# --- A2A call spans: the OpenTelemetry semantic conventions for A2A ----------
# open-telemetry/semantic-conventions-genai, docs/gen-ai/a2a.md (status Development, added by its
# PR #195) at this commit; unreleased (its CHANGELOG lists it under "Unreleased"). Its links pin the
# general conventions (error.type, server.*, client.*) at semantic-conventions v1.44.0.
SEMCONV_A2A_REPO = "open-telemetry/semantic-conventions-genai"
SEMCONV_A2A_DOC = "docs/gen-ai/a2a.md"
SEMCONV_A2A_COMMIT = "6718089fe6e0530fdf498d845f0532e9cf172c81"
# One CLIENT span per outbound A2A call, one SERVER span per request answered, each named by
# its A2A method (the value of ATTR_A2A_METHOD_NAME). The well-known method names we emit:
METHOD_SEND_MESSAGE = "SendMessage"
METHOD_SEND_STREAMING_MESSAGE = "SendStreamingMessage"
METHOD_SUBSCRIBE_TO_TASK = "SubscribeToTask"
METHOD_CANCEL_TASK = "CancelTask"
A2A_METHODS = (METHOD_SEND_MESSAGE, METHOD_SEND_STREAMING_MESSAGE, METHOD_SUBSCRIBE_TO_TASK, METHOD_CANCEL_TASK)
ATTR_A2A_METHOD_NAME = "a2a.method.name"  # required
ATTR_A2A_MESSAGE_ID = "a2a.message.id"  # the request's message (not our delivery id, HEADER_MESSAGE_ID)
ATTR_TASK_ID = "a2a.task.id"
ATTR_TASK_STATE = "a2a.task.state"  # TASK_STATE_* (AWAITING_STATES' keys are two of them)
ATTR_TENANT = "a2a.tenant"
ATTR_REFERENCE_TASK_IDS = "a2a.message.reference_task_ids"
ATTR_PROTOCOL_VERSION = "a2a.protocol.version"
ATTR_CONVERSATION_ID = "gen_ai.conversation.id"  # the A2A contextId
ATTR_AGENT_NAME = "gen_ai.agent.name"  # from the target (client) or local (server) Agent Card
ATTR_AGENT_DESCRIPTION = "gen_ai.agent.description"
ATTR_AGENT_VERSION = "gen_ai.agent.version"
ERROR_OTHER = "_OTHER"  # error.type when nothing better is known (the conventions' fallback value)

# --- names before the conventions (emitted too under OTEL_SEMCONV_STABILITY_OPT_IN=a2a/dup) ----
# call spans were named LEGACY_SPAN_SERVER_PREFIX / LEGACY_SPAN_CLIENT_PREFIX + the wrapped
# method (on_message_send, send_message...), which LEGACY_ATTR_METHOD carried; the producer span
# carried the context id as LEGACY_ATTR_CONTEXT_ID
LEGACY_SPAN_SERVER_PREFIX = "a2a.server."
LEGACY_SPAN_CLIENT_PREFIX = "a2a.client."
LEGACY_ATTR_METHOD = "a2a.method"
LEGACY_ATTR_CONTEXT_ID = "a2a.context.id"

# values of OTEL_SEMCONV_STABILITY_OPT_IN, read the way opentelemetry-python-contrib reads it
# (opentelemetry.instrumentation._semconv: a comma-separated list; "<signal>/dup" wins over "<signal>")
SEMCONV_OPT_A2A = "a2a"  # the conventions only (also the default)
SEMCONV_OPT_A2A_DUP = "a2a/dup"  # the conventions and, beside them, the names before them

# --- span attributes (ours) ------------------------------------------------
ATTR_OUTCOME = "a2a.active_task.producer.outcome"
ATTR_QUEUE_ROLE = "a2a.event_queue.role"
ATTR_CLOSE_IMMEDIATE = "a2a.event_queue.close.immediate"
ATTR_STALLED = "a2a.stalled"
ATTR_PARKED_AT = "a2a.parked_at"
ATTR_ASYNCIO_TASK = "asyncio.task.name"

# span events
EVENT_STALL = "a2a.stall"
EVENT_STALL_RESOLVED = "a2a.stall.resolved"

OUTCOME_COMPLETED = "completed"
OUTCOME_FAILED = "failed"
OUTCOME_CANCELLED = "cancelled"
OUTCOMES = (OUTCOME_COMPLETED, OUTCOME_FAILED, OUTCOME_CANCELLED)

# How a unit of work ended, when not plainly completed (a cascade snapshot's
# ``failures`` and ``losses``). A failure is one the agents themselves reported;
# a loss is work that never got to finish.
END_EXECUTOR_FAILED = "executor_failed"  # AgentExecutor.execute raised
END_TASK_FAILED = "task_failed"  # the task ended TASK_STATE_FAILED
END_TASK_REJECTED = "task_rejected"  # the task ended TASK_STATE_REJECTED
END_TASK_CANCELLED = "task_cancelled"  # cancelled at a client's request (tasks/cancel)
END_CALL_REJECTED = "call_rejected"  # an outbound A2A call answered with an A2A error
END_REQUEST_FAILED = "request_failed"  # an inbound A2A request this hop answered with an error
END_CANCELLED_BY_SHUTDOWN = "cancelled_by_shutdown"  # cancelled by a drain (aclose) or loop teardown
END_CANCELLED = "cancelled"  # cancelled, cause unknown (neither a client nor a shutdown)
END_DESTROYED_PENDING = "destroyed_pending"  # garbage-collected while pending
END_PUSH_FAILED = "push_failed"  # a push delivery that failed (the SDK logs and swallows it)
END_CALL_FAILED = "call_failed"  # an outbound A2A call that failed in transport (refused, reset, timeout)
END_TASK_ABANDONED = "task_abandoned"  # the work returned and left its task unfinished (fasta2a's worker)
FAILURE_KINDS = frozenset(
    {END_EXECUTOR_FAILED, END_TASK_FAILED, END_TASK_REJECTED, END_TASK_CANCELLED, END_CALL_REJECTED, END_REQUEST_FAILED}
)
LOSS_KINDS = frozenset(
    {END_CANCELLED_BY_SHUTDOWN, END_CANCELLED, END_DESTROYED_PENDING, END_PUSH_FAILED, END_CALL_FAILED,
     END_TASK_ABANDONED}
)

# the verdict on a settled cascade
VERDICT_COMPLETED = "completed"  # nothing failed, nothing lost
VERDICT_FAILED = "failed"  # the agents reported failure; nothing lost
VERDICT_LOST = "lost"  # some work never got to finish
VERDICTS = (VERDICT_COMPLETED, VERDICT_FAILED, VERDICT_LOST)
# the verdicts from best to worst: a cascade's outcome only ever moves towards the end
# (the collector and the `wait` client, merging shards' answers, rank them alike)
VERDICT_ORDER = (VERDICT_COMPLETED, VERDICT_FAILED, VERDICT_LOST)


def worse_verdict(a: str | None, b: str) -> str:
    """The later of two verdicts in ``VERDICT_ORDER`` (``a`` None: none yet, so ``b``)."""
    return b if a is None or VERDICT_ORDER.index(b) > VERDICT_ORDER.index(a) else a


# cascade status
STATUS_OPEN = "open"
STATUS_AWAITING_INPUT = "awaiting_input"
STATUS_STUCK = "stuck"
STATUS_SETTLED = "settled"
STATUS_UNKNOWN = "unknown"  # no hop has reported it (the API's answer for a trace id it never saw)
# a shard of a mesh tier: the ring gives this cascade to another shard (it is not
# counted here as open or stuck; the owner answers for it)
STATUS_MOVED = "moved"

# task states in which an a2a-sdk task waits for its user (the V2 handler keeps its producer alive)
AWAITING_STATES = {"TASK_STATE_INPUT_REQUIRED": "input_required", "TASK_STATE_AUTH_REQUIRED": "auth_required"}

ROLE_AGENT = "agent"
ROLE_SUBSCRIBERS = "subscribers"

# --- OpenTelemetry metric instruments (inside the agent) -------------------
OTEL_PRODUCERS_IN_FLIGHT = "a2a.producers.in_flight"
OTEL_PRODUCERS_STARTED = "a2a.producers.started"
OTEL_PRODUCERS_FINISHED = "a2a.producers.finished"
OTEL_STALLED_CLOSES = "a2a.event_queue.stalled_closes"
OTEL_DESTROYED_PENDING = "a2a.tasks.destroyed_pending"
OTEL_SHUTDOWN_LEAKED = "a2a.shutdown.leaked_producers"
OTEL_WORK_ENDED = "a2a.work.ended"  # failures and losses, by kind (attribute ATTR_ENDING)
ATTR_ENDING = "a2a.work.ending"
ATTR_SDK_PLUMBING = "a2a.sdk_plumbing"
# general semantic conventions
ATTR_ERROR_TYPE = "error.type"
ATTR_SERVER_ADDRESS = "server.address"
ATTR_SERVER_PORT = "server.port"
ATTR_URL_FULL = "url.full"

# --- wire: headers carried on A2A calls and push deliveries ----------------
HEADER_TRACEPARENT = "traceparent"
# unique id of one delivery attempt (docs/settlement.md: ids per delivery attempt)
HEADER_MESSAGE_ID = "x-a2a-quiescence-message"
# the sending hop (its service.name); also in baggage for other tools
HEADER_SENDER = "x-a2a-quiescence-sender"
# set by the collector on OTLP responses: a new value means it restarted
HEADER_COLLECTOR_ID = "x-a2a-quiescence-collector"
BAGGAGE_SENDER = "a2a.quiescence.sender"

# --- OTLP log records carrying lifecycle snapshots -------------------------
# event.name attribute of the log record; body is a JSON object
EVENT_HOP_SNAPSHOT = "a2a.quiescence.hop"
EVENT_CASCADE_SNAPSHOT = "a2a.quiescence.cascade"
LOG_ATTR_EVENT_NAME = "event.name"
# 2 adds failures, losses and awaiting to cascade snapshots, push and shutdown-cancel
# counters to hop snapshots; version 1 snapshots stay readable (they carry none of these)
SNAPSHOT_SCHEMA_VERSION = 2

# --- Prometheus (exported by the collector) --------------------------------
LABEL_AGENT = "agent"
M_PRODUCERS_IN_FLIGHT = "a2a_producers_in_flight"
M_PRODUCERS_STARTED = "a2a_producers_started_total"
M_PRODUCERS_FINISHED = "a2a_producers_finished_total"
M_STALLED_CLOSES = "a2a_event_queue_stalled_closes"
M_STALLS = "a2a_event_queue_stalls_total"
M_DESTROYED_PENDING = "a2a_tasks_destroyed_pending_total"
M_SHUTDOWN_LEAKED = "a2a_shutdown_leaked_producers"
M_SHUTDOWN_CASCADES_OPEN = "a2a_shutdown_cascades_open"
M_SHUTDOWN_CANCELLED = "a2a_shutdown_cancelled_producers"
M_PUSH_FAILED = "a2a_push_deliveries_failed_total"
M_AGENT_UP = "a2a_agent_up"
M_AGENT_LAST_SEEN = "a2a_agent_last_seen_timestamp_seconds"
M_AGENT_INCARNATIONS = "a2a_agent_incarnations_total"
M_CASCADES_OPEN = "a2a_cascades_open"
M_CASCADES_STUCK = "a2a_cascades_stuck"
M_CASCADES_AWAITING = "a2a_cascades_awaiting_input"
M_MESH_SETTLED = "a2a_mesh_settled"
M_CASCADES_SETTLED = "a2a_cascades_settled_total"
M_DETECTION_LATENCY = "a2a_settlement_detection_latency_seconds"
M_EDGE_MESSAGES = "a2a_edge_messages_total"
M_RECEIVED = "a2a_quiescence_received_total"
M_REJECTED = "a2a_quiescence_rejected_total"
M_FORWARDED = "a2a_quiescence_forwarded_total"
M_DROPPED = "a2a_quiescence_dropped_total"
M_FORWARD_WAITING = "a2a_quiescence_forward_waiting"
M_EVICTED = "a2a_quiescence_evicted_total"
M_SNAPSHOTS = "a2a_quiescence_snapshots_total"
# a mesh tier (sharded by trace id behind the load-balancing exporter)
M_CASCADES_MOVED = "a2a_cascades_moved"
M_RING_SHARDS = "a2a_mesh_ring_shards"
M_RING_CHANGES = "a2a_mesh_ring_changes_total"

# Names a PromQL expression may use, with the series suffixes a histogram adds.
EXPORTED_METRICS = frozenset(
    {
        M_PRODUCERS_IN_FLIGHT,
        M_PRODUCERS_STARTED,
        M_PRODUCERS_FINISHED,
        M_STALLED_CLOSES,
        M_STALLS,
        M_DESTROYED_PENDING,
        M_SHUTDOWN_LEAKED,
        M_SHUTDOWN_CASCADES_OPEN,
        M_SHUTDOWN_CANCELLED,
        M_PUSH_FAILED,
        M_AGENT_UP,
        M_AGENT_LAST_SEEN,
        M_AGENT_INCARNATIONS,
        M_CASCADES_OPEN,
        M_CASCADES_STUCK,
        M_CASCADES_AWAITING,
        M_MESH_SETTLED,
        M_CASCADES_SETTLED,
        M_CASCADES_MOVED,
        M_RING_SHARDS,
        M_RING_CHANGES,
        M_DETECTION_LATENCY + "_bucket",
        M_DETECTION_LATENCY + "_sum",
        M_DETECTION_LATENCY + "_count",
        M_EDGE_MESSAGES,
        M_RECEIVED,
        M_REJECTED,
        M_FORWARDED,
        M_DROPPED,
        M_FORWARD_WAITING,
        M_EVICTED,
        M_SNAPSHOTS,
    }
)

# rejection reasons (label `reason` on M_REJECTED)
REJECT_MALFORMED = "malformed"
REJECT_TOO_LARGE = "too_large"
REJECT_CONTENT_TYPE = "unsupported_media_type"
REJECT_UNAUTHORIZED = "unauthorized"
REJECT_NOT_FOUND = "not_found"

# why a request was not forwarded (label `reason` on M_DROPPED; collector/forward.py)
DROP_QUEUE_FULL = "queue_full"
DROP_UPSTREAM_REFUSED = "upstream_refused"
DROP_UPSTREAM_UNAVAILABLE = "upstream_unavailable"
DROP_REASONS = (DROP_QUEUE_FULL, DROP_UPSTREAM_REFUSED, DROP_UPSTREAM_UNAVAILABLE)

# --- alerts ----------------------------------------------------------------
ALERT_LEAKED = "A2AProducerLeakedAtShutdown"
ALERT_STUCK = "A2ACascadeStuck"
ALERT_SHUTDOWN_IN_FLIGHT = "A2AShutdownWithCascadeInFlight"
ALERT_CLOSE_STALLED = "A2AEventQueueCloseStalled"
ALERT_DESTROYED_PENDING = "A2ATaskDestroyedPending"
ALERT_COLLECTOR_DOWN = "A2AQuiescenceCollectorDown"
ALERT_CANCELLED_AT_SHUTDOWN = "A2AWorkCancelledAtShutdown"
ALERT_SETTLED_LOST = "A2ACascadeSettledWithLostWork"
ALERT_PUSH_FAILED = "A2APushDeliveriesFailing"
ALERT_COLLECTOR_REJECTING = "A2AQuiescenceCollectorRejecting"

# --- collector defaults ----------------------------------------------------
DEFAULT_OTLP_HTTP = "127.0.0.1:4318"
OTLP_GRPC_PORT = 4317  # also the shards' ring port (the load-balancing exporter's default)
DEFAULT_OTLP_GRPC = f"127.0.0.1:{OTLP_GRPC_PORT}"
DEFAULT_HTTP = "127.0.0.1:9464"

# --- environment variables: a2a_quiescence.environment_variables defines every one ------------

# the entry point (group opentelemetry_instrumentor) of this instrumentation: the name
# OTEL_PYTHON_DISABLED_INSTRUMENTATIONS lists to switch it off
ENTRY_POINT = "a2a_quiescence"
# the entry point and module of other A2A instrumentations, which ours must never take
# (loongsuite-instrumentation-a2a)
PEER_ENTRY_POINT = "a2a"
PEER_MODULE = "opentelemetry.instrumentation.a2a"
