"""Job types a service runs: names, functions, pools and argument schemas.

A :class:`JobRegistry` is the only way work reaches a service: a request names
a registered type and gives JSON arguments, which are validated against a
pydantic model built once, at registration: from the function's typed
signature, or, for a function whose only parameter is a pydantic model, that
model itself. Nothing else is ever called. A sync function runs in a worker
thread.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar, final

import attrs
import pydantic

from bulkhead._policy import Priority, is_async_callable

from ._schedules import CatchUp, Overlap, Schedule

_F = TypeVar("_F", bound=Callable[..., Any])

PRIORITY_NAMES: Mapping[str, int] = {p.name.lower(): int(p) for p in Priority}
"""``low``, ``normal``, ``high`` and ``urgent``: the four named priorities."""


class ArgumentsInvalid(ValueError):
    """JSON arguments that do not fit a job type's signature.

    ``errors`` lists ``(field, message)`` pairs, ``field`` being the dotted
    path of the offending argument (``"args.x"``).
    """

    errors: list[tuple[str, str]]

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{field}: {message}" for field, message in errors))


def resolve_priority(value: str | int) -> int:
    """The pool number of a priority given by name (``"high"``) or number.

    Raises:
      ValueError: for a name that is none of the four named priorities.
    """
    if isinstance(value, bool):
        raise ValueError(f"priority must be a name or an int, got {value!r}")
    if isinstance(value, int):
        return value
    try:
        return PRIORITY_NAMES[value.lower()]
    except KeyError:
        raise ValueError(
            f"unknown priority {value!r}: use one of {', '.join(PRIORITY_NAMES)} "
            "or a pool number"
        ) from None


@final
@attrs.frozen
class JobType:
    """One registered job type; built by :meth:`JobRegistry.job`."""

    name: str
    """The name requests use (``{"type": name}``)."""
    fn: Callable[..., Any]
    """The function run for each job (async, or sync and run in a thread)."""
    priority: int
    """The pool its jobs run in unless a request names another."""
    arguments: type[pydantic.BaseModel]
    """The pydantic model of its arguments, built from the signature (or the
    model that is the function's only parameter)."""
    model_parameter: str | None = None
    """The name of that only parameter, if :attr:`arguments` is its model."""

    @property
    def is_async(self) -> bool:
        """Whether :attr:`fn` is an async function (else it runs in a thread)."""
        return is_async_callable(self.fn)

    def validate(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """Return the keyword arguments for :attr:`fn` from JSON ``args``.

        Raises:
          ArgumentsInvalid: naming each argument that does not fit.
        """
        return self._arguments(canonical_json(args))

    def validate_json(self, text: str) -> dict[str, Any]:
        """:meth:`validate` for arguments given as JSON text, such as the
        journal keeps them (whole numbers as ints): checked as they are,
        without parsing them and writing them out again first.

        >>> registry = JobRegistry()
        >>> @registry.job()
        ... async def add(x: int, y: int = 0) -> int:
        ...     return x + y
        >>> registry["add"].validate_json('{"x": 2, "y": 3.0}')
        {'x': 2, 'y': 3}

        Raises:
          ArgumentsInvalid: as :meth:`validate`.
        """
        try:
            return self._arguments(text)
        except ArgumentsInvalid as invalid:
            # Not canonical, e.g. a whole number written 3.0 (as 0.2's
            # journal kept arguments): taken as validate() takes it.
            try:
                canonical = canonical_json(json.loads(text))
            except ValueError:  # not JSON: pydantic said so
                raise invalid from None
            if canonical == text:
                raise
            return self._arguments(canonical)

    def _arguments(self, text: str) -> dict[str, Any]:
        try:
            # As JSON, strictly, as the published JSON schema says: "3" and
            # false are not integers, 3.0 is (canonical_json made it 3); a
            # date string still parses.
            model = self.arguments.model_validate_json(text, strict=True)
        except RecursionError:
            raise ArgumentsInvalid([("args", "nested too deeply")]) from None
        except pydantic.ValidationError as exc:
            raise ArgumentsInvalid(
                [
                    (".".join(["args", *map(str, error["loc"])]), error["msg"])
                    for error in exc.errors()
                ]
            ) from None
        if self.model_parameter is not None:
            return {self.model_parameter: model}
        return {name: getattr(model, name) for name in type(model).model_fields}

    def schema(self) -> dict[str, Any]:
        """The JSON schema of its arguments (for ``GET /job-types``)."""
        return self.arguments.model_json_schema()


def canonical_json(args: Mapping[str, Any]) -> str:
    """``args`` as the journal keeps them: JSON text in which a whole number
    is an int (JSON Schema's ``integer`` takes ``3.0``, and a float field
    takes an int), so that :meth:`JobType.validate_json` checks them as
    they are.

    Raises:
      ArgumentsInvalid: if ``args`` nest too deeply to be written out.
    """
    try:
        return json.dumps(_integral_numbers_as_ints(args))
    except RecursionError:
        raise ArgumentsInvalid([("args", "nested too deeply")]) from None


def _integral_numbers_as_ints(value: Any) -> Any:
    """``value`` with every float that is a whole number as an int (JSON
    Schema's ``integer`` takes ``3.0``; a float field takes an int)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _integral_numbers_as_ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral_numbers_as_ints(v) for v in value]
    return value


def _arguments_model(
    name: str, fn: Callable[..., Any]
) -> tuple[type[pydantic.BaseModel], str | None]:
    """The model JSON arguments are checked against, and the name of the
    parameter that takes the model whole (``None``: keyword arguments)."""
    fields: dict[str, Any] = {}
    bound: set[str] = set()  # what a partial fixes is not the client's to set
    annotated: Any = fn  # where the annotations are written
    while isinstance(annotated, functools.partial):
        bound |= annotated.keywords.keys()
        annotated = annotated.func
    annotated = inspect.unwrap(annotated)  # functools.wraps, lru_cache...
    if not (inspect.isfunction(annotated) or inspect.ismethod(annotated)):
        annotated = type(annotated).__call__  # an object with __call__
    try:
        hints = inspect.get_annotations(annotated, eval_str=True)
    except NameError as exc:
        raise TypeError(
            f"job type {name!r}: cannot resolve annotation: {exc}"
        ) from None
    parameters = [
        p for p in inspect.signature(fn).parameters.values() if p.name not in bound
    ]
    for param in parameters:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(
                f"job type {name!r}: *{param.name} cannot come from JSON; "
                "give every argument a name and a type"
            )
        if param.kind is param.POSITIONAL_ONLY:
            raise TypeError(
                f"job type {name!r}: argument {param.name!r} is positional-only; "
                "JSON arguments are passed by name"
            )
    if len(parameters) == 1:
        only = hints.get(parameters[0].name)
        if isinstance(only, type) and issubclass(only, pydantic.BaseModel):
            return only, parameters[0].name
    for param in parameters:
        if param.name not in hints:
            raise TypeError(
                f"job type {name!r}: argument {param.name!r} has no type "
                "annotation; annotate it so its JSON can be validated"
            )
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (hints[param.name], default)
    model: type[pydantic.BaseModel] = pydantic.create_model(
        f"{name}_arguments",
        __config__=pydantic.ConfigDict(extra="forbid", allow_inf_nan=False),
        **fields,
    )
    return model, None


@final
class JobRegistry:
    """Maps job type names to functions, each with its pool.

    Example::

        registry = JobRegistry()

        @registry.job(priority="high")
        async def resize_image(url: str, width: int = 640) -> str:
            ...

    Serve it with ``bulkhead serve mymodule:registry``; a client then posts
    ``{"type": "resize_image", "args": {"url": "..."}}`` to ``/jobs``.

    The JSON ``args`` are checked against the typed signature, or, if the
    function's only parameter is a pydantic model, against that model (the
    function then receives the model). A sync function runs in a worker
    thread; if its job is cancelled or times out, the job ends at once but
    the thread (which nothing can interrupt) runs on, holding one of its
    pool's thread slots (as many as the pool has workers) until it returns.
    """

    def __init__(self) -> None:
        self._types: dict[str, JobType] = {}
        self._schedules: dict[str, Schedule] = {}

    def job(
        self, *, name: str | None = None, priority: str | int = "normal"
    ) -> Callable[[_F], _F]:
        """Register a function as a job type (a decorator).

        Args:
          name: the type's name (default: the function's ``__name__``).
          priority: its pool, ``low``, ``normal`` (default), ``high``,
            ``urgent`` or a pool number.

        Raises:
          TypeError: for a generator or a class, or a signature JSON
            cannot fill.
          ValueError: for a name registered twice or a bad priority.
        """

        def register(fn: _F) -> _F:
            self.add(fn, name=name, priority=priority)
            return fn

        return register

    def add(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        priority: str | int = "normal",
    ) -> JobType:
        """Register ``fn`` (as :meth:`job` does) and return its :class:`JobType`."""
        if (
            not callable(fn)
            or inspect.isclass(fn)
            or inspect.isgeneratorfunction(fn)
            or inspect.isasyncgenfunction(fn)
        ):
            raise TypeError(
                f"a job type must be a function or an async function, got {fn!r}"
            )
        if not is_async_callable(fn) and inspect.iscoroutinefunction(
            inspect.unwrap(fn)
        ):
            raise TypeError(
                f"{fn!r} is a sync function wrapping an async one: its calls "
                "would return coroutines; register the async function, or make "
                "the wrapper async"
            )
        name = getattr(fn, "__name__", None) if name is None else name
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(
                f"a job type name must be an identifier (pass name=), got {name!r}"
            )
        if name in self._types:
            raise ValueError(f"job type {name!r} is already registered")
        arguments, model_parameter = _arguments_model(name, fn)
        job_type = JobType(
            name, fn, resolve_priority(priority), arguments, model_parameter
        )
        self._types[name] = job_type
        return job_type

    # ----------------------------------------------- periodic jobs (schedules)

    def schedule(
        self,
        name: str,
        job_type: str,
        cron: str,
        *,
        args: Mapping[str, Any] | None = None,
        timezone: str = "UTC",
        overlap: Overlap = "skip",
        catch_up: CatchUp = "skip",
        catch_up_window: float | None = None,
    ) -> Schedule:
        """Run job type ``job_type`` periodically, at the times ``cron`` says.

        A schedule is its own declaration rather than a parameter of
        :meth:`job`: one job type may run on several schedules with
        different arguments (a daily and a weekly ``report``), a schedule
        needs arguments of its own, and its name, not the type's, is what
        identifies its runs across restarts and instances. Register the job
        type first; everything is checked here, at import time, never when
        the schedule fires.

        Each fire time is enqueued exactly once, also with several instances
        sharing a journal, as a job with idempotency key
        ``schedule:<name>:<UTC time>`` and ``run_at`` its fire time.

        Args:
          name: the schedule's name (an identifier, unique in the registry).
          job_type: a job type registered here.
          cron: five fields (minute hour day-of-month month day-of-week),
            Debian cron's syntax, e.g. ``"*/5 * * * *"``.
          args: the runs' JSON arguments, checked against the job type's
            schema (required if the type has required arguments).
          timezone: IANA zone the cron expression is read in (default UTC).
          overlap: ``"skip"`` (default): a fire time passes, counted as
            missed, while the last run is unfinished; ``"allow"``.
          catch_up: fire times missed while no instance ran: ``"skip"``
            (default) counts them; ``"latest"`` runs the latest once;
            ``"all"`` runs each one within ``catch_up_window``.
          catch_up_window: seconds; missed runs older than this never run
            (required for ``"all"``, optional for ``"latest"``).

        Returns:
          The :class:`~bulkhead.service._schedules.Schedule`.

        Raises:
          ValueError: for a name registered twice or not an identifier, an
            unknown job type, arguments that do not fit its schema or are
            missing, a bad cron expression, an unknown time zone, an unknown
            policy or a window that does not fit it.
          TypeError: for arguments that are not JSON, or a window that is
            not a number.
        """
        if name in self._schedules:
            raise ValueError(f"schedule {name!r} is already registered")
        try:
            target = self[job_type]
        except KeyError as exc:
            raise ValueError(f"schedule {name!r}: {exc.args[0]}") from None
        given = {} if args is None else dict(args)
        required = [
            field
            for field, info in target.arguments.model_fields.items()
            if info.is_required() and field not in given
        ]
        if args is None and required:
            raise ValueError(
                f"schedule {name!r}: job type {job_type!r} has required "
                f"arguments ({', '.join(required)}): give them with args="
            )
        try:
            json.dumps(given, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"schedule {name!r}: args must be JSON (str, numbers, bools, "
                f"None, lists and dicts): {exc}"
            ) from None
        try:
            # Kept as a submission's are, so each run is checked as kept.
            text = canonical_json(given)
            target.validate_json(text)
        except ArgumentsInvalid as exc:
            raise ValueError(
                f"schedule {name!r}: arguments do not fit job type {job_type!r}: {exc}"
            ) from None
        schedule = Schedule(
            name,
            target.name,
            target.priority,
            cron,
            text,
            timezone=timezone,
            overlap=overlap,
            catch_up=catch_up,
            catch_up_window=catch_up_window,
        )
        self._schedules[name] = schedule
        return schedule

    @property
    def schedules(self) -> tuple[Schedule, ...]:
        """The registered schedules, in registration order."""
        return tuple(self._schedules.values())

    def __getitem__(self, name: str) -> JobType:
        """The job type called ``name``.

        Raises:
          KeyError: naming the registered types.
        """
        try:
            return self._types[name]
        except KeyError:
            known = ", ".join(sorted(self._types)) or "none"
            raise KeyError(f"unknown job type {name!r}; registered: {known}") from None

    def __iter__(self) -> Iterator[JobType]:
        """The registered job types, in registration order."""
        return iter(self._types.values())

    def __len__(self) -> int:
        """How many job types are registered."""
        return len(self._types)

    def __repr__(self) -> str:
        return f"<bulkhead.service.JobRegistry {', '.join(self._types) or 'empty'}>"
