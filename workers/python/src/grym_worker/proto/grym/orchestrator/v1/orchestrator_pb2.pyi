import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Modality(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODALITY_UNSPECIFIED: _ClassVar[Modality]
    MODALITY_TEXT: _ClassVar[Modality]
    MODALITY_AUDIO: _ClassVar[Modality]
    MODALITY_JSON: _ClassVar[Modality]

class Strategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STRATEGY_UNSPECIFIED: _ClassVar[Strategy]
    STRATEGY_SEQUENTIAL: _ClassVar[Strategy]
    STRATEGY_PARALLEL: _ClassVar[Strategy]
    STRATEGY_CONDITIONAL: _ClassVar[Strategy]

class FailurePolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FAILURE_POLICY_UNSPECIFIED: _ClassVar[FailurePolicy]
    FAILURE_POLICY_FAIL_FAST: _ClassVar[FailurePolicy]
    FAILURE_POLICY_CONTINUE: _ClassVar[FailurePolicy]

class Priority(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRIORITY_UNSPECIFIED: _ClassVar[Priority]
    PRIORITY_LOW: _ClassVar[Priority]
    PRIORITY_NORMAL: _ClassVar[Priority]
    PRIORITY_HIGH: _ClassVar[Priority]
    PRIORITY_CRITICAL: _ClassVar[Priority]

class TaskStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_STATUS_UNSPECIFIED: _ClassVar[TaskStatus]
    TASK_STATUS_QUEUED: _ClassVar[TaskStatus]
    TASK_STATUS_RUNNING: _ClassVar[TaskStatus]
    TASK_STATUS_SUCCEEDED: _ClassVar[TaskStatus]
    TASK_STATUS_FAILED: _ClassVar[TaskStatus]
    TASK_STATUS_DEADLINE_EXCEEDED: _ClassVar[TaskStatus]
    TASK_STATUS_CANCELLED: _ClassVar[TaskStatus]
    TASK_STATUS_DEPENDENCY_FAILED: _ClassVar[TaskStatus]
    TASK_STATUS_SKIPPED: _ClassVar[TaskStatus]

class SelectionPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SELECTION_POLICY_UNSPECIFIED: _ClassVar[SelectionPolicy]
    SELECTION_POLICY_SCORED: _ClassVar[SelectionPolicy]
    SELECTION_POLICY_THOMPSON: _ClassVar[SelectionPolicy]

class RoutingReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROUTING_REASON_UNSPECIFIED: _ClassVar[RoutingReason]
    ROUTING_REASON_ROUTE: _ClassVar[RoutingReason]
    ROUTING_REASON_HIGHEST_SCORE: _ClassVar[RoutingReason]
    ROUTING_REASON_HIGHEST_SAMPLE: _ClassVar[RoutingReason]
    ROUTING_REASON_COMPOSITE: _ClassVar[RoutingReason]
    ROUTING_REASON_RECIPE: _ClassVar[RoutingReason]

class AttemptOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ATTEMPT_OUTCOME_UNSPECIFIED: _ClassVar[AttemptOutcome]
    ATTEMPT_OUTCOME_SUCCEEDED: _ClassVar[AttemptOutcome]
    ATTEMPT_OUTCOME_FAILED: _ClassVar[AttemptOutcome]
    ATTEMPT_OUTCOME_TIMED_OUT: _ClassVar[AttemptOutcome]
    ATTEMPT_OUTCOME_ABANDONED: _ClassVar[AttemptOutcome]

class ModelHealth(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_HEALTH_UNSPECIFIED: _ClassVar[ModelHealth]
    MODEL_HEALTH_SERVING: _ClassVar[ModelHealth]
    MODEL_HEALTH_NOT_SERVING: _ClassVar[ModelHealth]

class CapabilitySource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CAPABILITY_SOURCE_UNSPECIFIED: _ClassVar[CapabilitySource]
    CAPABILITY_SOURCE_WORKER: _ClassVar[CapabilitySource]
    CAPABILITY_SOURCE_CONFIG: _ClassVar[CapabilitySource]
MODALITY_UNSPECIFIED: Modality
MODALITY_TEXT: Modality
MODALITY_AUDIO: Modality
MODALITY_JSON: Modality
STRATEGY_UNSPECIFIED: Strategy
STRATEGY_SEQUENTIAL: Strategy
STRATEGY_PARALLEL: Strategy
STRATEGY_CONDITIONAL: Strategy
FAILURE_POLICY_UNSPECIFIED: FailurePolicy
FAILURE_POLICY_FAIL_FAST: FailurePolicy
FAILURE_POLICY_CONTINUE: FailurePolicy
PRIORITY_UNSPECIFIED: Priority
PRIORITY_LOW: Priority
PRIORITY_NORMAL: Priority
PRIORITY_HIGH: Priority
PRIORITY_CRITICAL: Priority
TASK_STATUS_UNSPECIFIED: TaskStatus
TASK_STATUS_QUEUED: TaskStatus
TASK_STATUS_RUNNING: TaskStatus
TASK_STATUS_SUCCEEDED: TaskStatus
TASK_STATUS_FAILED: TaskStatus
TASK_STATUS_DEADLINE_EXCEEDED: TaskStatus
TASK_STATUS_CANCELLED: TaskStatus
TASK_STATUS_DEPENDENCY_FAILED: TaskStatus
TASK_STATUS_SKIPPED: TaskStatus
SELECTION_POLICY_UNSPECIFIED: SelectionPolicy
SELECTION_POLICY_SCORED: SelectionPolicy
SELECTION_POLICY_THOMPSON: SelectionPolicy
ROUTING_REASON_UNSPECIFIED: RoutingReason
ROUTING_REASON_ROUTE: RoutingReason
ROUTING_REASON_HIGHEST_SCORE: RoutingReason
ROUTING_REASON_HIGHEST_SAMPLE: RoutingReason
ROUTING_REASON_COMPOSITE: RoutingReason
ROUTING_REASON_RECIPE: RoutingReason
ATTEMPT_OUTCOME_UNSPECIFIED: AttemptOutcome
ATTEMPT_OUTCOME_SUCCEEDED: AttemptOutcome
ATTEMPT_OUTCOME_FAILED: AttemptOutcome
ATTEMPT_OUTCOME_TIMED_OUT: AttemptOutcome
ATTEMPT_OUTCOME_ABANDONED: AttemptOutcome
MODEL_HEALTH_UNSPECIFIED: ModelHealth
MODEL_HEALTH_SERVING: ModelHealth
MODEL_HEALTH_NOT_SERVING: ModelHealth
CAPABILITY_SOURCE_UNSPECIFIED: CapabilitySource
CAPABILITY_SOURCE_WORKER: CapabilitySource
CAPABILITY_SOURCE_CONFIG: CapabilitySource

class GetBottlenecksRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetBottlenecksResponse(_message.Message):
    __slots__ = ("bottlenecks", "interval")
    BOTTLENECKS_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    bottlenecks: _containers.RepeatedCompositeFieldContainer[Bottleneck]
    interval: _duration_pb2.Duration
    def __init__(self, bottlenecks: _Optional[_Iterable[_Union[Bottleneck, _Mapping]]] = ..., interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class Bottleneck(_message.Message):
    __slots__ = ("kind", "subject", "value", "threshold", "message", "since")
    KIND_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    kind: str
    subject: str
    value: float
    threshold: float
    message: str
    since: _timestamp_pb2.Timestamp
    def __init__(self, kind: _Optional[str] = ..., subject: _Optional[str] = ..., value: _Optional[float] = ..., threshold: _Optional[float] = ..., message: _Optional[str] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetContextStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetContextStatsResponse(_message.Message):
    __slots__ = ("cache_hits", "cache_misses", "cache_evictions", "cache_bytes", "cache_entries")
    CACHE_HITS_FIELD_NUMBER: _ClassVar[int]
    CACHE_MISSES_FIELD_NUMBER: _ClassVar[int]
    CACHE_EVICTIONS_FIELD_NUMBER: _ClassVar[int]
    CACHE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CACHE_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    cache_hits: int
    cache_misses: int
    cache_evictions: int
    cache_bytes: int
    cache_entries: int
    def __init__(self, cache_hits: _Optional[int] = ..., cache_misses: _Optional[int] = ..., cache_evictions: _Optional[int] = ..., cache_bytes: _Optional[int] = ..., cache_entries: _Optional[int] = ...) -> None: ...

class PutSessionContextRequest(_message.Message):
    __slots__ = ("session_id", "context", "replace")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    REPLACE_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    context: _struct_pb2.Struct
    replace: bool
    def __init__(self, session_id: _Optional[str] = ..., context: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., replace: _Optional[bool] = ...) -> None: ...

class PutSessionContextResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: Session
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ...) -> None: ...

class GetSessionContextRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class GetSessionContextResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: Session
    def __init__(self, session: _Optional[_Union[Session, _Mapping]] = ...) -> None: ...

class DeleteSessionContextRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class DeleteSessionContextResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Session(_message.Message):
    __slots__ = ("session_id", "context", "entries")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    context: _struct_pb2.Struct
    entries: _containers.RepeatedCompositeFieldContainer[SessionEntry]
    def __init__(self, session_id: _Optional[str] = ..., context: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., entries: _Optional[_Iterable[_Union[SessionEntry, _Mapping]]] = ...) -> None: ...

class SessionEntry(_message.Message):
    __slots__ = ("model_kind", "context")
    MODEL_KIND_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    model_kind: str
    context: _struct_pb2.Struct
    def __init__(self, model_kind: _Optional[str] = ..., context: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class ExecuteTaskRequest(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: Task
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ...) -> None: ...

class ExecuteTaskResponse(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: TaskResult
    def __init__(self, result: _Optional[_Union[TaskResult, _Mapping]] = ...) -> None: ...

class SubmitTaskRequest(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: Task
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ...) -> None: ...

class SubmitTaskResponse(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class GetTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class GetTaskResponse(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: TaskResult
    def __init__(self, result: _Optional[_Union[TaskResult, _Mapping]] = ...) -> None: ...

class CancelTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class CancelTaskResponse(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: TaskResult
    def __init__(self, result: _Optional[_Union[TaskResult, _Mapping]] = ...) -> None: ...

class WatchTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class WatchTaskResponse(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: TaskResult
    def __init__(self, result: _Optional[_Union[TaskResult, _Mapping]] = ...) -> None: ...

class StreamTaskRequest(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: Task
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ...) -> None: ...

class StreamTaskResponse(_message.Message):
    __slots__ = ("task_id", "queued", "model_chosen", "started", "attempt_finished", "result", "step_started", "step_finished", "output_chunk")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    MODEL_CHOSEN_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FINISHED_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    STEP_STARTED_FIELD_NUMBER: _ClassVar[int]
    STEP_FINISHED_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_CHUNK_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    queued: TaskQueued
    model_chosen: Routing
    started: TaskStarted
    attempt_finished: Attempt
    result: TaskResult
    step_started: StepStarted
    step_finished: StepResult
    output_chunk: OutputChunk
    def __init__(self, task_id: _Optional[str] = ..., queued: _Optional[_Union[TaskQueued, _Mapping]] = ..., model_chosen: _Optional[_Union[Routing, _Mapping]] = ..., started: _Optional[_Union[TaskStarted, _Mapping]] = ..., attempt_finished: _Optional[_Union[Attempt, _Mapping]] = ..., result: _Optional[_Union[TaskResult, _Mapping]] = ..., step_started: _Optional[_Union[StepStarted, _Mapping]] = ..., step_finished: _Optional[_Union[StepResult, _Mapping]] = ..., output_chunk: _Optional[_Union[OutputChunk, _Mapping]] = ...) -> None: ...

class OutputChunk(_message.Message):
    __slots__ = ("step_id", "model_id", "text", "json")
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    step_id: str
    model_id: str
    text: str
    json: _struct_pb2.Value
    def __init__(self, step_id: _Optional[str] = ..., model_id: _Optional[str] = ..., text: _Optional[str] = ..., json: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...

class StepStarted(_message.Message):
    __slots__ = ("step_id", "routing", "budget")
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    ROUTING_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    step_id: str
    routing: Routing
    budget: _duration_pb2.Duration
    def __init__(self, step_id: _Optional[str] = ..., routing: _Optional[_Union[Routing, _Mapping]] = ..., budget: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class TaskQueued(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TaskStarted(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PlanTaskRequest(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: Task
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ...) -> None: ...

class PlanTaskResponse(_message.Message):
    __slots__ = ("analysis", "routing", "composite")
    ANALYSIS_FIELD_NUMBER: _ClassVar[int]
    ROUTING_FIELD_NUMBER: _ClassVar[int]
    COMPOSITE_FIELD_NUMBER: _ClassVar[int]
    analysis: TaskAnalysis
    routing: Routing
    composite: CompositePlan
    def __init__(self, analysis: _Optional[_Union[TaskAnalysis, _Mapping]] = ..., routing: _Optional[_Union[Routing, _Mapping]] = ..., composite: _Optional[_Union[CompositePlan, _Mapping]] = ...) -> None: ...

class CompositePlan(_message.Message):
    __slots__ = ("strategy", "failure_policy", "steps", "stages", "critical_path", "estimated_latency", "output_step", "recipe")
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    FAILURE_POLICY_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    CRITICAL_PATH_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_LATENCY_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_STEP_FIELD_NUMBER: _ClassVar[int]
    RECIPE_FIELD_NUMBER: _ClassVar[int]
    strategy: Strategy
    failure_policy: FailurePolicy
    steps: _containers.RepeatedCompositeFieldContainer[StepPlan]
    stages: _containers.RepeatedCompositeFieldContainer[Stage]
    critical_path: _containers.RepeatedScalarFieldContainer[str]
    estimated_latency: _duration_pb2.Duration
    output_step: str
    recipe: Recipe
    def __init__(self, strategy: _Optional[_Union[Strategy, str]] = ..., failure_policy: _Optional[_Union[FailurePolicy, str]] = ..., steps: _Optional[_Iterable[_Union[StepPlan, _Mapping]]] = ..., stages: _Optional[_Iterable[_Union[Stage, _Mapping]]] = ..., critical_path: _Optional[_Iterable[str]] = ..., estimated_latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., output_step: _Optional[str] = ..., recipe: _Optional[_Union[Recipe, _Mapping]] = ...) -> None: ...

class StepPlan(_message.Message):
    __slots__ = ("step_id", "type", "after", "when", "stage", "routing", "critical")
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    WHEN_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    ROUTING_FIELD_NUMBER: _ClassVar[int]
    CRITICAL_FIELD_NUMBER: _ClassVar[int]
    step_id: str
    type: str
    after: _containers.RepeatedScalarFieldContainer[str]
    when: str
    stage: int
    routing: Routing
    critical: bool
    def __init__(self, step_id: _Optional[str] = ..., type: _Optional[str] = ..., after: _Optional[_Iterable[str]] = ..., when: _Optional[str] = ..., stage: _Optional[int] = ..., routing: _Optional[_Union[Routing, _Mapping]] = ..., critical: _Optional[bool] = ...) -> None: ...

class Stage(_message.Message):
    __slots__ = ("step_ids",)
    STEP_IDS_FIELD_NUMBER: _ClassVar[int]
    step_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, step_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class Recipe(_message.Message):
    __slots__ = ("task_type", "chain", "reason", "then")
    TASK_TYPE_FIELD_NUMBER: _ClassVar[int]
    CHAIN_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    THEN_FIELD_NUMBER: _ClassVar[int]
    task_type: str
    chain: _containers.RepeatedScalarFieldContainer[str]
    reason: str
    then: str
    def __init__(self, task_type: _Optional[str] = ..., chain: _Optional[_Iterable[str]] = ..., reason: _Optional[str] = ..., then: _Optional[str] = ...) -> None: ...

class TaskAnalysis(_message.Message):
    __slots__ = ("modality", "mime_type")
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    MIME_TYPE_FIELD_NUMBER: _ClassVar[int]
    modality: Modality
    mime_type: str
    def __init__(self, modality: _Optional[_Union[Modality, str]] = ..., mime_type: _Optional[str] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[Model]
    def __init__(self, models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("id", "type", "input", "parameters", "priority", "timeout", "depends_on", "context", "session_id", "composite")
    ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    DEPENDS_ON_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    COMPOSITE_FIELD_NUMBER: _ClassVar[int]
    id: str
    type: str
    input: TaskInput
    parameters: _struct_pb2.Struct
    priority: Priority
    timeout: _duration_pb2.Duration
    depends_on: _containers.RepeatedScalarFieldContainer[str]
    context: _struct_pb2.Struct
    session_id: str
    composite: Composite
    def __init__(self, id: _Optional[str] = ..., type: _Optional[str] = ..., input: _Optional[_Union[TaskInput, _Mapping]] = ..., parameters: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., priority: _Optional[_Union[Priority, str]] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., depends_on: _Optional[_Iterable[str]] = ..., context: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., session_id: _Optional[str] = ..., composite: _Optional[_Union[Composite, _Mapping]] = ...) -> None: ...

class Composite(_message.Message):
    __slots__ = ("strategy", "steps", "failure_policy", "output_step")
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    FAILURE_POLICY_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_STEP_FIELD_NUMBER: _ClassVar[int]
    strategy: Strategy
    steps: _containers.RepeatedCompositeFieldContainer[Step]
    failure_policy: FailurePolicy
    output_step: str
    def __init__(self, strategy: _Optional[_Union[Strategy, str]] = ..., steps: _Optional[_Iterable[_Union[Step, _Mapping]]] = ..., failure_policy: _Optional[_Union[FailurePolicy, str]] = ..., output_step: _Optional[str] = ...) -> None: ...

class Step(_message.Message):
    __slots__ = ("id", "task", "after", "when")
    ID_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    WHEN_FIELD_NUMBER: _ClassVar[int]
    id: str
    task: StepTask
    after: _containers.RepeatedScalarFieldContainer[str]
    when: str
    def __init__(self, id: _Optional[str] = ..., task: _Optional[_Union[StepTask, _Mapping]] = ..., after: _Optional[_Iterable[str]] = ..., when: _Optional[str] = ...) -> None: ...

class StepTask(_message.Message):
    __slots__ = ("type", "input", "parameters", "context", "timeout", "input_from")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    INPUT_FROM_FIELD_NUMBER: _ClassVar[int]
    type: str
    input: TaskInput
    parameters: _struct_pb2.Struct
    context: _struct_pb2.Struct
    timeout: _duration_pb2.Duration
    input_from: str
    def __init__(self, type: _Optional[str] = ..., input: _Optional[_Union[TaskInput, _Mapping]] = ..., parameters: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., context: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., input_from: _Optional[str] = ...) -> None: ...

class TaskInput(_message.Message):
    __slots__ = ("text", "audio", "json")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    text: str
    audio: Audio
    json: _struct_pb2.Value
    def __init__(self, text: _Optional[str] = ..., audio: _Optional[_Union[Audio, _Mapping]] = ..., json: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...

class Audio(_message.Message):
    __slots__ = ("data", "mime_type")
    DATA_FIELD_NUMBER: _ClassVar[int]
    MIME_TYPE_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    mime_type: str
    def __init__(self, data: _Optional[bytes] = ..., mime_type: _Optional[str] = ...) -> None: ...

class TaskOutput(_message.Message):
    __slots__ = ("text", "json", "data", "data_mime_type")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    DATA_MIME_TYPE_FIELD_NUMBER: _ClassVar[int]
    text: str
    json: _struct_pb2.Value
    data: bytes
    data_mime_type: str
    def __init__(self, text: _Optional[str] = ..., json: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., data: _Optional[bytes] = ..., data_mime_type: _Optional[str] = ...) -> None: ...

class TaskResult(_message.Message):
    __slots__ = ("task_id", "status", "model_id", "output", "error", "metrics", "routing", "queued_at", "started_at", "finished_at", "steps", "recipe")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    ROUTING_FIELD_NUMBER: _ClassVar[int]
    QUEUED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    RECIPE_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    status: TaskStatus
    model_id: str
    output: TaskOutput
    error: TaskError
    metrics: OrchestrationMetrics
    routing: Routing
    queued_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    steps: _containers.RepeatedCompositeFieldContainer[StepResult]
    recipe: Recipe
    def __init__(self, task_id: _Optional[str] = ..., status: _Optional[_Union[TaskStatus, str]] = ..., model_id: _Optional[str] = ..., output: _Optional[_Union[TaskOutput, _Mapping]] = ..., error: _Optional[_Union[TaskError, _Mapping]] = ..., metrics: _Optional[_Union[OrchestrationMetrics, _Mapping]] = ..., routing: _Optional[_Union[Routing, _Mapping]] = ..., queued_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., steps: _Optional[_Iterable[_Union[StepResult, _Mapping]]] = ..., recipe: _Optional[_Union[Recipe, _Mapping]] = ...) -> None: ...

class StepResult(_message.Message):
    __slots__ = ("step_id", "type", "status", "model_id", "output", "error", "latency", "queue_wait", "attempts", "routing", "budget")
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    QUEUE_WAIT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    ROUTING_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    step_id: str
    type: str
    status: TaskStatus
    model_id: str
    output: TaskOutput
    error: TaskError
    latency: _duration_pb2.Duration
    queue_wait: _duration_pb2.Duration
    attempts: int
    routing: Routing
    budget: _duration_pb2.Duration
    def __init__(self, step_id: _Optional[str] = ..., type: _Optional[str] = ..., status: _Optional[_Union[TaskStatus, str]] = ..., model_id: _Optional[str] = ..., output: _Optional[_Union[TaskOutput, _Mapping]] = ..., error: _Optional[_Union[TaskError, _Mapping]] = ..., latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., queue_wait: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., attempts: _Optional[int] = ..., routing: _Optional[_Union[Routing, _Mapping]] = ..., budget: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class Routing(_message.Message):
    __slots__ = ("policy", "reason", "explanation", "chosen_model_id", "estimated_latency", "candidates", "fallbacks_taken", "excluded")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    CHOSEN_MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_LATENCY_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    FALLBACKS_TAKEN_FIELD_NUMBER: _ClassVar[int]
    EXCLUDED_FIELD_NUMBER: _ClassVar[int]
    policy: SelectionPolicy
    reason: RoutingReason
    explanation: str
    chosen_model_id: str
    estimated_latency: _duration_pb2.Duration
    candidates: _containers.RepeatedCompositeFieldContainer[CandidateScore]
    fallbacks_taken: _containers.RepeatedScalarFieldContainer[str]
    excluded: _containers.RepeatedCompositeFieldContainer[ExcludedModel]
    def __init__(self, policy: _Optional[_Union[SelectionPolicy, str]] = ..., reason: _Optional[_Union[RoutingReason, str]] = ..., explanation: _Optional[str] = ..., chosen_model_id: _Optional[str] = ..., estimated_latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., candidates: _Optional[_Iterable[_Union[CandidateScore, _Mapping]]] = ..., fallbacks_taken: _Optional[_Iterable[str]] = ..., excluded: _Optional[_Iterable[_Union[ExcludedModel, _Mapping]]] = ...) -> None: ...

class ExcludedModel(_message.Message):
    __slots__ = ("model_id", "reason")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    reason: str
    def __init__(self, model_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class CandidateScore(_message.Message):
    __slots__ = ("model_id", "health", "in_flight", "confidence", "success_rate", "error_rate", "samples", "expected_latency", "normalized_latency", "performance", "performance_weight", "score", "sample")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_RATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_LATENCY_FIELD_NUMBER: _ClassVar[int]
    NORMALIZED_LATENCY_FIELD_NUMBER: _ClassVar[int]
    PERFORMANCE_FIELD_NUMBER: _ClassVar[int]
    PERFORMANCE_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    health: ModelHealth
    in_flight: int
    confidence: float
    success_rate: float
    error_rate: float
    samples: float
    expected_latency: _duration_pb2.Duration
    normalized_latency: float
    performance: float
    performance_weight: float
    score: float
    sample: float
    def __init__(self, model_id: _Optional[str] = ..., health: _Optional[_Union[ModelHealth, str]] = ..., in_flight: _Optional[int] = ..., confidence: _Optional[float] = ..., success_rate: _Optional[float] = ..., error_rate: _Optional[float] = ..., samples: _Optional[float] = ..., expected_latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., normalized_latency: _Optional[float] = ..., performance: _Optional[float] = ..., performance_weight: _Optional[float] = ..., score: _Optional[float] = ..., sample: _Optional[float] = ...) -> None: ...

class TaskError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class OrchestrationMetrics(_message.Message):
    __slots__ = ("total_latency", "worker_latency", "attempts", "models_used", "queue_wait", "context_cache_hits", "context_cache_misses")
    TOTAL_LATENCY_FIELD_NUMBER: _ClassVar[int]
    WORKER_LATENCY_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    MODELS_USED_FIELD_NUMBER: _ClassVar[int]
    QUEUE_WAIT_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_CACHE_HITS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_CACHE_MISSES_FIELD_NUMBER: _ClassVar[int]
    total_latency: _duration_pb2.Duration
    worker_latency: _duration_pb2.Duration
    attempts: _containers.RepeatedCompositeFieldContainer[Attempt]
    models_used: _containers.RepeatedScalarFieldContainer[str]
    queue_wait: _duration_pb2.Duration
    context_cache_hits: int
    context_cache_misses: int
    def __init__(self, total_latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., worker_latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., attempts: _Optional[_Iterable[_Union[Attempt, _Mapping]]] = ..., models_used: _Optional[_Iterable[str]] = ..., queue_wait: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., context_cache_hits: _Optional[int] = ..., context_cache_misses: _Optional[int] = ...) -> None: ...

class Attempt(_message.Message):
    __slots__ = ("model_id", "outcome", "latency", "error", "step_id", "endpoint", "hedge")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    STEP_ID_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    HEDGE_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    outcome: AttemptOutcome
    latency: _duration_pb2.Duration
    error: TaskError
    step_id: str
    endpoint: str
    hedge: bool
    def __init__(self, model_id: _Optional[str] = ..., outcome: _Optional[_Union[AttemptOutcome, str]] = ..., latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., error: _Optional[_Union[TaskError, _Mapping]] = ..., step_id: _Optional[str] = ..., endpoint: _Optional[str] = ..., hedge: _Optional[bool] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("id", "kind", "capabilities", "health", "capability_source", "replicas", "in_flight")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    CAPABILITY_SOURCE_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: str
    capabilities: _containers.RepeatedCompositeFieldContainer[Capability]
    health: ModelHealth
    capability_source: CapabilitySource
    replicas: _containers.RepeatedCompositeFieldContainer[Replica]
    in_flight: int
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[str] = ..., capabilities: _Optional[_Iterable[_Union[Capability, _Mapping]]] = ..., health: _Optional[_Union[ModelHealth, str]] = ..., capability_source: _Optional[_Union[CapabilitySource, str]] = ..., replicas: _Optional[_Iterable[_Union[Replica, _Mapping]]] = ..., in_flight: _Optional[int] = ...) -> None: ...

class Replica(_message.Message):
    __slots__ = ("endpoint", "health", "in_flight", "ejected")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    EJECTED_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    health: ModelHealth
    in_flight: int
    ejected: bool
    def __init__(self, endpoint: _Optional[str] = ..., health: _Optional[_Union[ModelHealth, str]] = ..., in_flight: _Optional[int] = ..., ejected: _Optional[bool] = ...) -> None: ...

class Capability(_message.Message):
    __slots__ = ("task_type", "confidence", "estimated_latency", "max_concurrency", "stats", "inputs")
    TASK_TYPE_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_LATENCY_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    task_type: str
    confidence: float
    estimated_latency: _duration_pb2.Duration
    max_concurrency: int
    stats: PerformanceStats
    inputs: _containers.RepeatedScalarFieldContainer[Modality]
    def __init__(self, task_type: _Optional[str] = ..., confidence: _Optional[float] = ..., estimated_latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_concurrency: _Optional[int] = ..., stats: _Optional[_Union[PerformanceStats, _Mapping]] = ..., inputs: _Optional[_Iterable[_Union[Modality, str]]] = ...) -> None: ...

class PerformanceStats(_message.Message):
    __slots__ = ("attempts", "successes", "failures", "timeouts", "success_rate", "error_rate", "mean_latency", "p50_latency", "p95_latency", "p99_latency")
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    SUCCESSES_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    TIMEOUTS_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_RATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    MEAN_LATENCY_FIELD_NUMBER: _ClassVar[int]
    P50_LATENCY_FIELD_NUMBER: _ClassVar[int]
    P95_LATENCY_FIELD_NUMBER: _ClassVar[int]
    P99_LATENCY_FIELD_NUMBER: _ClassVar[int]
    attempts: float
    successes: float
    failures: float
    timeouts: float
    success_rate: float
    error_rate: float
    mean_latency: _duration_pb2.Duration
    p50_latency: _duration_pb2.Duration
    p95_latency: _duration_pb2.Duration
    p99_latency: _duration_pb2.Duration
    def __init__(self, attempts: _Optional[float] = ..., successes: _Optional[float] = ..., failures: _Optional[float] = ..., timeouts: _Optional[float] = ..., success_rate: _Optional[float] = ..., error_rate: _Optional[float] = ..., mean_latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., p50_latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., p95_latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., p99_latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...
