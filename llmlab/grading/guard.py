"""Block the callables a check names while a learner's code runs.

A check names what the exercise forbids: its reference (``ref``) and every twin that computes the
same thing (``block=[...]``): llmlab functions, whole classes, torch/numpy functions. Nothing in
the library is decorated; a callable is recognised by what it *is*, so no alias, attribute,
re-import or copy made with ``inspect.getsource`` + ``exec`` gets around it:

- a Python function by its code: ``(co_qualname, co_code, co_names)`` — the same for a fresh import of the
  module, a ``functools.wraps`` wrapper's ``__wrapped__`` and an ``exec`` of its source;
- a class by the code of every method, property and static/class method in its ``__dict__``
  (so constructing it, calling any method, or inheriting them is blocked);
- a builtin (``torch.softmax``, ``F.scaled_dot_product_attention``) by identity, together with its
  namesakes in torch's namespaces (``torch.Tensor.softmax``, ``torch.nn.functional.softmax``, ...).

The calls are seen by a profile function (``sys.setprofile``): it sees every Python frame that
starts and every builtin called from Python code, in whatever thread-local context or wrapper.
Two modes use the same keys:

- :func:`blocked` (instant feedback in a notebook): raises :class:`ReferenceBlocked` while the
  learner's function runs. It lives in the learner's own process, so it is a courtesy, not a
  defence.
- :func:`arm` (the grader's judge process, see :mod:`llmlab.grading.judge`): installed for the
  whole life of the process, before the learner's code is given control, with an audit hook that
  refuses to replace the profile function, start threads or processes, or use ctypes; a blocked
  call ends the process at once (it cannot be caught), after telling the grader why.
"""

from __future__ import annotations

import contextlib
import functools
import re
import sys
import types
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

# torch namespaces where a builtin's namesakes live (``torch.softmax`` <-> ``Tensor.softmax``).
TORCH_NAMESPACES = ("torch", "torch.nn.functional", "torch.special", "torch.linalg", "torch.fft",
                    "torch._C._VariableFunctions", "torch._C._nn", "torch._C._special",
                    "torch._C._linalg", "torch._C._fft")
BLOCKED_EXIT = 86  # the judge's exit status after a blocked call


class ReferenceBlocked(RuntimeError):
    """Raised when code under a check calls a callable the check blocks."""


def message(name: str) -> str:
    return (f"your code called `{name}`, which this exercise asks you to write yourself (it is "
            "blocked while your answer runs). Implement it with more elementary operations.")


@dataclass
class Keys:
    """What to block: Python code by (qualname, bytecode), builtins by id, and display names."""

    code: dict[tuple[str, bytes, tuple[str, ...]], str] = field(default_factory=dict)
    filenames: set[str] = field(default_factory=set)  # where the blocked code was defined
    builtins: dict[int, str] = field(default_factory=dict)
    classes: dict[int, str] = field(default_factory=dict)
    methods: set[tuple[str, bytes, tuple[str, ...]]] = field(default_factory=set)
    # builtin methods (``Tensor.softmax``) are called bound, as a new object each time: they are
    # recognised by name and by the class of the object they are bound to
    bound: dict[str, str] = field(default_factory=dict)
    owners: list[type] = field(default_factory=list)
    objects: list[Any] = field(default_factory=list)  # keeps builtins alive, so ids stay valid

    def __bool__(self) -> bool:
        return bool(self.code or self.builtins)

    def names(self) -> list[str]:
        return sorted(set(self.code.values()) | set(self.builtins.values()))

    def covers(self, obj: Any) -> str | None:
        """The blocked name ``obj`` is (an alias, a bound method or a ``functools.partial`` of
        a blocked callable), else None."""
        for _ in range(8):
            if isinstance(obj, functools.partial):
                obj = obj.func
            elif hasattr(obj, "__func__"):
                obj = obj.__func__
            else:
                break
        if id(obj) in self.builtins:
            return self.builtins[id(obj)]
        if isinstance(obj, type) and id(obj) in self.classes:
            return self.classes[id(obj)]
        for code in _codes(obj):
            if code_key(code) in self.code and is_copy(code, self.filenames):
                return self.code[code_key(code)]
        return None


def code_key(code: types.CodeType) -> tuple[str, bytes, tuple[str, ...]]:
    # The names too: two lambdas of one shape (``lambda *a: run(yours, *a)`` and
    # ``lambda *a: run(ours, *a)``) have the same bytecode and differ only in what they load.
    return (code.co_qualname, code.co_code, code.co_names)


LEARNER_FILENAME = "<learner>"


def is_copy(code: types.CodeType, filenames: set[str]) -> bool:
    """Whether code whose key matches is the reference itself: defined in its file (a fresh
    import too), or compiled from a string (``exec(inspect.getsource(...))``). Code a learner
    typed in a cell that happens to be identical is not blocked (the similarity report shows it)."""
    name = code.co_filename
    return name in filenames or (name.startswith("<") and name != LEARNER_FILENAME)


def display_name(obj: Any) -> str:
    obj = kernel_function(obj) or obj
    module = getattr(obj, "__module__", None) or getattr(getattr(obj, "__objclass__", None),
                                                         "__module__", "")
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", repr(obj))
    if name.startswith("_") and "." in name:  # torch._VariableFunctionsClass.softmax -> softmax
        name = getattr(obj, "__name__", name)
    return f"{module}.{name}" if module and module not in ("builtins", "__main__") else name


def kernel_function(obj: Any) -> types.FunctionType | None:
    """The Python function a Triton kernel (``@triton.jit``: a ``JITFunction``, or an
    ``InterpretedFunction`` under ``TRITON_INTERPRET=1``) was made from, else None."""
    fn = getattr(obj, "fn", None)
    if isinstance(fn, types.FunctionType) and type(obj).__module__.startswith("triton"):
        return fn
    return None


def _kernel_codes(kernel: Any, fn: types.FunctionType) -> Iterator[types.CodeType]:
    """A Triton kernel's Python function, and the rewritten copy of it that the interpreter
    runs (``InterpretedFunction.rewrite``, cached per function, so a re-``jit`` shares it)."""
    yield fn.__code__
    try:
        rewritten = kernel.rewrite() if callable(getattr(kernel, "rewrite", None)) else None
    except Exception:
        rewritten = None
    if isinstance(getattr(rewritten, "__code__", None), types.CodeType):
        yield rewritten.__code__


def _codes(fn: Any) -> Iterator[types.CodeType]:
    """The code of the innermost function ``fn`` wraps (following ``__wrapped__`` chains), or
    a Triton kernel's (:func:`_kernel_codes`)."""
    kernel = kernel_function(fn)
    if kernel is not None:
        yield from _kernel_codes(fn, kernel)
        return
    seen = set()
    while fn is not None and id(fn) not in seen:
        seen.add(id(fn))
        fn = getattr(fn, "__func__", fn)
        wrapped = fn.__dict__.get("__wrapped__") if hasattr(fn, "__dict__") else None
        code = getattr(fn, "__code__", None)
        # Only the innermost function: a wrapper's code is often a generic decorator's
        # (``torch.no_grad()``'s), shared with the learner's own decorated functions; calling
        # the wrapper reaches the wrapped code anyway.
        if isinstance(code, types.CodeType) and wrapped is None:
            yield code
        fn = wrapped


def _namesakes(obj: Any) -> Iterator[Any]:
    """Builtins of the same name in torch's namespaces, and the Tensor method."""
    name = getattr(obj, "__name__", None)
    module = getattr(obj, "__module__", None) or getattr(getattr(obj, "__objclass__", None),
                                                         "__module__", "") or ""
    if not name or not (module.startswith("torch") or "torch" in repr(obj)):
        return
    torch = sys.modules.get("torch")
    if torch is None:
        return
    for path in TORCH_NAMESPACES:
        try:
            ns = _getpath(torch, path.split(".")[1:])
        except AttributeError:
            continue
        twin = getattr(ns, name, None)
        if twin is not None:
            yield twin
    for cls in (getattr(torch, "Tensor", None), getattr(torch._C, "TensorBase", None)):
        twin = getattr(cls, name, None)
        if twin is not None:
            yield twin


def _getpath(obj: Any, parts: list[str]) -> Any:
    for part in parts:
        obj = getattr(obj, part)
    return obj


# What a profile function sees called from Python: a "c_call" event for these.
VISIBLE_BUILTINS = (types.BuiltinFunctionType, types.MethodDescriptorType)


def keys_for(objects: Iterable[Any]) -> Keys:
    """The keys that block every object in ``objects`` (functions, classes, builtins, methods)."""
    keys = Keys()
    for obj in objects:
        _add(keys, obj, display_name(obj))
    return keys


def _add(keys: Keys, obj: Any, name: str) -> None:
    if obj is None:
        return
    if isinstance(obj, functools.partial):
        return _add(keys, obj.func, name)
    closure = getattr(obj, "__closure__", None)
    if closure and not hasattr(obj, "__wrapped__"):  # a decorator's closure: see _codes
        # A wrapper made by a helper (``lambda *a: run(ref, *a)``) shares its code with the same
        # helper's wrapper around the learner's function: block what it wraps, not its code.
        for cell in closure:
            try:
                content = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            if isinstance(content, (types.FunctionType, type)):
                _add(keys, content, name)
        return
    if isinstance(obj, type):
        keys.classes[id(obj)] = name
        keys.objects.append(obj)
        for attr, member in vars(obj).items():
            for part in (member, getattr(member, "fget", None), getattr(member, "fset", None)):
                for code in _codes(part):
                    keys.code[code_key(code)] = f"{name}.{attr}"
                    keys.methods.add(code_key(code))
                    keys.filenames.add(code.co_filename)
        return
    codes = list(_codes(obj))
    if not codes and not isinstance(obj, VISIBLE_BUILTINS):
        raise TypeError(f"{name} cannot be blocked: the guard sees calls of Python functions, "
                        f"classes and builtins, and a {type(obj).__name__} is none of them (a "
                        "NumPy ufunc, a torch op overload). Block the Python function that "
                        "calls it, or leave it out.")
    for code in codes:
        keys.code[code_key(code)] = name
        keys.filenames.add(code.co_filename)
    if not codes or str(getattr(obj, "__module__", "") or "").startswith("torch"):
        for twin in [obj, *_namesakes(obj)]:
            keys.builtins[id(twin)] = name
            keys.objects.append(twin)
            owner = getattr(twin, "__objclass__", None)
            if isinstance(owner, type) and isinstance(twin, types.MethodDescriptorType):
                keys.bound[twin.__name__] = name
                if owner not in keys.owners:
                    keys.owners.append(owner)
            for code in _codes(twin):  # a Python namesake (torch.nn.functional.softmax)
                keys.code[code_key(code)] = name
                keys.filenames.add(code.co_filename)


# ---------------------------------------------------------------- instant feedback (notebook)

@contextlib.contextmanager
def blocked(references: Iterable[Any]) -> Iterator[None]:
    """Within the block, a call (in this thread) of any of ``references`` raises
    :class:`ReferenceBlocked`. The learner's own process: a courtesy, not a defence."""
    keys = keys_for(references)
    if not keys:
        yield
        return
    code, builtins, bound, owners = keys.code, keys.builtins, keys.bound, tuple(keys.owners)
    filenames = keys.filenames

    def profile(frame: types.FrameType, event: str, arg: Any) -> None:
        if event == "call":
            name = code.get(code_key(frame.f_code))
            if name is not None and not is_copy(frame.f_code, filenames):
                name = None
        elif event == "c_call":
            name = builtins.get(id(arg))
            if name is None and getattr(arg, "__name__", None) in bound and \
                    isinstance(getattr(arg, "__self__", None), owners):
                name = bound[arg.__name__]
        else:
            return
        if name is not None:
            raise ReferenceBlocked(message(name))

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        yield
    finally:
        sys.setprofile(previous)


# ---------------------------------------------------------------- the judge (grader's process)

# Audit events the judge refuses once armed: anything that could remove the profile function,
# run code where it does not reach (threads, processes), or rewrite the interpreter's memory.
DENIED_EVENTS = ("sys.setprofile", "sys.settrace", "os.fork", "os.forkpty", "os.posix_spawn",
                 "os.exec", "os.spawn", "os.system", "subprocess.Popen", "pty.spawn",
                 "code.__new__", "sys.addaudithook", "os.kill", "os.killpg", "signal.pthread_kill")
DENIED_PREFIXES = ("ctypes.", "_ctypes.", "winreg.", "os.ptrace")
DENIED_IMPORTS = ("_thread", "_ctypes", "ctypes", "_posixsubprocess", "_multiprocessing",
                  "_xxsubinterpreters", "_testcapi", "_testinternalcapi")
DENIED_FUNCTION_ATTRS = ("__code__", "__defaults__", "__kwdefaults__")
# A process's memory and open files are reachable as files: /proc/<pid>/mem (its own, to patch
# the guard out; the grading server's, to change later judges), /proc/<pid>/fd/N (the server's
# channels). Opening those, or a /proc directory to open them relative to, is refused.
DENIED_PROC_PATH = (r"^/proc(/(\d+|self|thread-self)(/task(/\d+)?)?)?/?$"
                    r"|^/proc/.*/(mem|fd|fdinfo|map_files)(/|$)")

_PROFILE_SOURCE = '''
def _llmlab_profile(frame, event, arg, _exit=_exit, _write=_write, _id=id, _type=type, _getattr=getattr,
                    _isinstance=isinstance, _owners=_owners, _trusted=_trusted, _str=str):
    if event == "call":
        if frame.f_code.co_qualname not in {qualnames}:
            return
        key = (frame.f_code.co_qualname, frame.f_code.co_code, frame.f_code.co_names)
        if key not in {codes}:
            return
        where = frame.f_code.co_filename
        if where not in {filenames} and (where[:1] != "<" or where == "<learner>"):
            return
        name = key[0]
    elif event == "c_call":
        if _id(arg) not in {builtins}:
            if _getattr(arg, "__name__", None) not in {bound}:
                return
            if not _isinstance(_getattr(arg, "__self__", None), _owners):
                return
        name = _getattr(arg, "__name__", "a blocked builtin")
    else:
        return
    caller = frame if event == "c_call" else frame.f_back
    # the reference's own code (a copy made after arming never is), called by trusted code only
    trusted = caller is not None and (event == "c_call" or _id(frame.f_code) in _trusted)
    f = caller
    while f is not None and trusted:
        trusted = _id(f.f_code) in _trusted
        f = f.f_back
    if trusted and event == "call" and key in {method_codes} and frame.f_code.co_argcount:
        first = frame.f_locals.get(frame.f_code.co_varnames[0])
        if first is not None and _id(first) not in {classes} and _id(_type(first)) not in {classes}:
            trusted = False
    if trusted:
        return
    _write({fd}, ("\\n" + '{{"blocked": "' + _str(name).replace('"', "'") + '"}}' + "\\n").encode())
    _exit({status})
'''


def _set_literal(values: Iterable[Any]) -> str:
    items = sorted(values, key=repr)
    return "{" + ", ".join(repr(v) for v in items) + "}" if items else "{None}"


def arm(keys: Keys, trusted_codes: Iterable[types.CodeType], record_fd: int,
        untrusted: Iterable[types.CodeType] = ()) -> None:
    """Block ``keys`` for the rest of this process (the grader's judge; see the module doc).

    A blocked call is allowed only when the blocked code is the reference's own (a copy made
    later never is), every frame above it is trusted code and, for a method, its instance is of
    a class that existed before the learner's code ran. Trusted code is ``trusted_codes`` (the
    chapter's test cells, the judge) and the code of every function that exists when the guard
    is armed (torch's ``Module.__call__``, llmlab, the standard library), except ``untrusted``
    (the judge's functions that call the learner's answers, so an answer that *is* the
    reference is blocked too). The learner's code does not exist yet, and whatever it creates
    later is not trusted, so a learner's frame anywhere above a blocked call blocks it. Anything
    else ends the process with status ``BLOCKED_EXIT``.
    """
    import os
    import threading

    excluded = {id(c) for code in untrusted for c in nested_codes(code)}
    trusted = [c for code in trusted_codes for c in nested_codes(code)]
    trusted += [c for c in existing_codes() if id(c) not in excluded]
    pre_classes = set(keys.classes)
    for cls in list(keys.objects):
        if isinstance(cls, type):
            pre_classes |= {id(c) for c in _subclasses(cls)}
    source = _PROFILE_SOURCE.format(
        qualnames=_set_literal({k[0] for k in keys.code}), bound=_set_literal(keys.bound),
        filenames=_set_literal(keys.filenames), method_codes=_set_literal(keys.methods),
        codes=_set_literal(keys.code), builtins=_set_literal(keys.builtins),
        classes=_set_literal(pre_classes), fd=int(record_fd), status=BLOCKED_EXIT)
    profile_code = compile(source, "<llmlab-guard>", "exec")
    audit_code = compile(_AUDIT_SOURCE, "<llmlab-audit>", "exec")
    # The guard's own functions are trusted too: nobody may change their defaults (their keys).
    trusted_ids = frozenset(id(c) for c in [*trusted, *nested_codes(profile_code), *nested_codes(audit_code)])
    namespace: dict[str, Any] = {"_exit": os._exit, "_write": os.write,
                                 "_owners": tuple(keys.owners), "_trusted": trusted_ids}
    exec(profile_code, namespace)
    profile = namespace["_llmlab_profile"]
    audit_namespace: dict[str, Any] = {"_trusted": trusted_ids,
                                       "_proc": re.compile(DENIED_PROC_PATH).match,
                                       "_real": os.path.realpath, "_fsdecode": os.fsdecode}
    exec(audit_code, audit_namespace)
    # Keep everything the profile compares ids with alive for the life of the process.
    _KEEP.extend([profile, trusted, keys.objects])
    # Threads would run without the profile function: make them unavailable.
    import _thread

    def no_threads(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("threads are not available while an answer is being graded")

    _thread.start_new_thread = no_threads  # type: ignore[assignment]
    _thread.start_new = no_threads  # type: ignore[attr-defined]
    threading._start_new_thread = no_threads  # type: ignore[attr-defined]
    threading.setprofile(None)
    threading.settrace(None)
    sys.setprofile(profile)
    sys.addaudithook(audit_namespace["_llmlab_audit"])


_KEEP: list[Any] = []


def _subclasses(cls: type) -> Iterator[type]:
    stack = [cls]
    while stack:
        c = stack.pop()
        yield c
        try:
            stack.extend(c.__subclasses__())
        except TypeError:
            pass


def nested_codes(code: types.CodeType) -> Iterator[types.CodeType]:
    """``code`` and the code nested in it (functions, lambdas, comprehensions)."""
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from nested_codes(const)


def existing_codes() -> list[types.CodeType]:
    """The code of every function alive now, with the code nested in it."""
    import gc

    functions = [o for o in gc.get_objects() if isinstance(o, types.FunctionType)]
    return [c for f in functions for c in nested_codes(f.__code__)]


# Refuses what would switch the guard off. Changing ``__code__``/``__defaults__`` is refused for
# trusted functions (the guard's own hold its keys), allowed for new ones (a namedtuple's).
_AUDIT_SOURCE = f'''
def _llmlab_audit(event, args, _id=id, _getattr=getattr, _trusted=_trusted, _proc=_proc,
                  _real=_real, _fsdecode=_fsdecode, _isinstance=isinstance):
    if event in {_set_literal(DENIED_EVENTS)} or event.startswith({DENIED_PREFIXES!r}):
        raise RuntimeError("not allowed while an answer is being graded: " + event)
    if event == "open" and args and _isinstance(args[0], (str, bytes)) and \
            _proc(_fsdecode(_real(args[0]))):
        raise RuntimeError("not allowed while an answer is being graded: open " + str(args[0]))
    if event == "import" and args and args[0] in {_set_literal(DENIED_IMPORTS)}:
        raise RuntimeError("not allowed while an answer is being graded: import " + str(args[0]))
    if event == "object.__setattr__" and len(args) > 1 and args[1] in {DENIED_FUNCTION_ATTRS!r} and \\
            _id(_getattr(args[0], "__code__", None)) in _trusted:
        raise RuntimeError("not allowed while an answer is being graded: setting " + str(args[1]))
'''


def _dummy_call(fn: Any) -> None:
    import inspect

    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        sig = None
    if sig is None:
        fn()
        return
    args = [None for p in sig.parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]
    kwargs = {p.name: None for p in sig.parameters.values()
              if p.kind == p.KEYWORD_ONLY and p.default is p.empty}
    result = fn(*args, **kwargs)
    if inspect.isgenerator(result):  # a generator function's body starts at the first next()
        next(result)


def unblocked(objects: Iterable[Any]) -> list[str]:
    """The objects (and, for a class, the methods) that calling under ``blocked`` does not stop.

    The test of every chapter's twin lists: each listed twin must really be blocked. A wrapper
    (``functools.wraps``) is called at the function it wraps, as a real call reaches it; the
    dummy arguments would stop most wrappers before they get there.
    """
    import inspect

    missed = []
    for obj in objects:
        targets = [obj]
        if isinstance(obj, type):
            members = [getattr(m, "__func__", m) for m in vars(obj).values()]
            targets = [m for m in members if isinstance(m, types.FunctionType)] or [obj]
        for target in targets:
            try:
                with blocked([obj]):  # a Triton kernel: its function, as the interpreter runs it
                    _dummy_call(kernel_function(target) or inspect.unwrap(target))
            except ReferenceBlocked:
                continue
            except Exception:
                pass
            missed.append(display_name(target))
    return missed
