"""Typed model components: ``kind`` -> class, and configs that are the constructors' arguments.

A component is an ``nn.Module`` class decorated with :func:`component`. Its config is exactly its
constructor's named parameters (the diffusers ``register_to_config`` idea): keys, defaults and
value checks live in one signature, and the instance remembers the arguments it was built with
(``module.config``, JSON-able, ``kind`` first). Keyword-only parameters are runtime inputs, not
architecture (e.g. the texts a scratch vocabulary is trained on), and are not recorded. A
parameter that takes another component (a CLIP's image tower, a probe's encoder) is recorded as
that component's config and rebuilt from it.

Components are found by ``kind`` without a central list: every module of ``radlens.models`` is
imported on first lookup, so adding a component is writing its module (and, to name a
configuration, a JSON file in the registry folder)::

    @component("abmil", family="mil head")
    class ABMIL(nn.Module):
        def __init__(self, in_dim: int, hidden: int = 128, n_classes: int = 1) -> None: ...

A component that needs files beside its weights (a text tower's tokenizer) defines
``save_files(folder)`` and ``from_files(config, folder)`` (a classmethod); bundles call them.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import os
import pkgutil
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from radlens.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

T = TypeVar("T", bound=type)
_KINDS: dict[str, Kind] = {}
_DISCOVERED = False
# A bundle component's own files go in this sub-folder (its config.json must not be overwritten by,
# say, a text tower's transformers config.json); a nested component's go in its argument's sub-folder.
FILES = "files"


@dataclass(frozen=True)
class Kind:
    """A registered component kind: its name, family (what it is for) and class."""

    name: str
    family: str
    cls: type

    def parameters(self) -> dict[str, inspect.Parameter]:
        """The config parameters: the constructor's named, non keyword-only arguments (``kind`` excluded)."""
        params = list(inspect.signature(self.cls.__init__).parameters.values())[1:]
        return {p.name: p for p in params
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.POSITIONAL_ONLY) and p.name != "kind"}

    def takes_kind(self) -> bool:
        return "kind" in inspect.signature(self.cls.__init__).parameters

    def component_parameters(self) -> set[str]:
        """The config parameters that take another component (annotated with an ``nn.Module`` class)."""
        from torch import nn

        hints = typing.get_type_hints(self.cls.__init__)
        return {name for name in self.parameters() if name in hints
                and any(isinstance(t, type) and issubclass(t, nn.Module) for t in typing.get_args(hints[name]) or (hints[name],))}


def component(*names: str, family: str) -> Callable[[T], T]:
    """Register a class under ``names`` (a class taking a ``kind`` argument may serve several).

    The constructor is wrapped to record its bound named arguments as ``self.config``.
    """

    def register(cls: T) -> T:
        init = cls.__init__
        signature = inspect.signature(init)

        @functools.wraps(init)
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            init(self, *args, **kwargs)
            if type(self) is not cls:  # a subclass records its own arguments
                return
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            kind = bound.arguments.get("kind", names[0])
            recorded = {k: _recorded(v) for k, v in bound.arguments.items()
                        if k not in ("self", "kind") and signature.parameters[k].kind is not inspect.Parameter.KEYWORD_ONLY}
            object.__setattr__(self, "config", {"kind": kind, **recorded})

        cls.__init__ = __init__  # type: ignore[misc]
        for name in names:
            if name in _KINDS and _KINDS[name].cls.__qualname__ != cls.__qualname__:
                raise ConfigError(f"component kind {name!r} is registered twice ({_KINDS[name].cls.__qualname__}, {cls.__qualname__})")
            _KINDS[name] = Kind(name, family, cls)
        return cls

    return register


def _recorded(value: Any) -> Any:
    """A constructor argument as JSON-able config: components become their configs, tuples lists."""
    config = getattr(value, "config", None)
    if isinstance(config, dict) and "kind" in config:
        return dict(config)
    if isinstance(value, tuple):
        return [_recorded(v) for v in value]
    if isinstance(value, list):
        return [_recorded(v) for v in value]
    return value


def _discover() -> None:
    """Import every module of ``radlens.models`` once, so their components register themselves."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    import radlens.models as package

    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{info.name}")
    _DISCOVERED = True


def kinds() -> dict[str, Kind]:
    """Every registered kind, by name."""
    _discover()
    return dict(_KINDS)


def kind_of(spec: Mapping[str, Any]) -> Kind:
    """The registered kind a config names; ConfigError listing the known kinds otherwise."""
    known = kinds()
    name = spec.get("kind")
    if name not in known:
        raise ConfigError(f"unknown component kind {name!r}; known: {', '.join(sorted(known))}")
    return known[name]


def check_config(spec: Mapping[str, Any], prefix: str = "") -> Kind:
    """ConfigError for unknown keys or missing required arguments, recursively, without building."""
    kind = kind_of(spec)
    params = kind.parameters()
    unknown = sorted(set(spec) - set(params) - {"kind"})
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(prefix + k for k in unknown)} for kind {kind.name!r}; "
                          f"allowed: {', '.join(sorted(params))}")
    missing = [n for n, p in params.items() if p.default is inspect.Parameter.empty and n not in spec]
    if missing:
        raise ConfigError(f"kind {kind.name!r} needs {', '.join(prefix + m for m in missing)}")
    for key in kind.component_parameters() & set(spec):
        if not isinstance(spec[key], Mapping) or "kind" not in spec[key]:
            raise ConfigError(f"{prefix}{key} must be a component config (an object with a 'kind'), got {spec[key]!r:.80}")
    for key, value in spec.items():
        if isinstance(value, Mapping) and "kind" in value:
            check_config(value, f"{prefix}{key}.")
    return kind


def build(spec: Mapping[str, Any], folder: str | os.PathLike[str] | None = None, *, _top: bool = True,
          **runtime: Any) -> Any:
    """A component from its config; nested component configs are built first.

    ``folder`` (a bundle component folder) lets components with files (``from_files``) read them
    (the top component from ``folder/files``, nested ones from the sub-folder named by their
    argument, as :func:`save_files` wrote them); ``runtime`` goes to the top component's
    keyword-only parameters (e.g. ``texts``) and to nested ones that take the same name.
    """
    kind = check_config(spec)
    args: dict[str, Any] = {}
    for key, value in spec.items():
        if key == "kind":
            continue
        if isinstance(value, Mapping) and "kind" in value:
            sub = None if folder is None else Path(folder) / key
            value = build(value, sub, _top=False, **_accepted(kind_of(value), runtime))
        args[key] = value
    if kind.takes_kind():
        args["kind"] = kind.name
    from_files = getattr(kind.cls, "from_files", None)
    if folder is not None and from_files is not None:
        return from_files(args, Path(folder) / FILES if _top else Path(folder))
    return kind.cls(**args, **_accepted(kind, runtime))


def _accepted(kind: Kind, runtime: Mapping[str, Any]) -> dict[str, Any]:
    params = inspect.signature(kind.cls.__init__).parameters
    return {k: v for k, v in runtime.items() if k in params and params[k].kind is inspect.Parameter.KEYWORD_ONLY}


def save_files(module: Any, folder: Path, _top: bool = True) -> None:
    """Write the extra files of ``module`` (in ``folder/files``) and of every nested component, each in
    its argument's sub-folder."""
    own = getattr(module, "save_files", None)
    if own is not None:
        own(folder / FILES if _top else folder)
    for key, value in (getattr(module, "config", None) or {}).items():
        child = getattr(module, key, None)
        if isinstance(value, dict) and "kind" in value and child is not None:
            save_files(child, folder / key, _top=False)


def canonical(config: Mapping[str, Any]) -> str:
    """A config as sorted JSON, for comparing configs."""
    return json.dumps(config, sort_keys=True)


def weights_digest(module: nn.Module) -> str:
    """SHA-256 of a module's state (names, dtypes, shapes and bytes): equal digests, equal weights."""
    import hashlib

    import torch

    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{data.dtype}|{tuple(data.shape)}|".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def frozen_subtrees(module: nn.Module, prefix: str = "") -> list[str]:
    """Paths of the largest submodules of ``module`` whose parameters are all frozen (``prefix`` before each)."""
    params = list(module.parameters())
    if params and not any(p.requires_grad for p in params):
        return [prefix.rstrip(".")]
    return [path for name, child in module.named_children() for path in frozen_subtrees(child, f"{prefix}{name}.")]
