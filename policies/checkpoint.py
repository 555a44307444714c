"""Trained MADDPG actors without torch or RLlib: read an export's weights and act in numpy.

An export (`policies.maddpg.export.export_actors`) is an RLlib `MultiRLModule`
checkpoint: one folder per agent whose `module_state.pkl` holds the actor's weights
as numpy arrays, and `placement.json`, which names the agents, the env config and,
under `actor`, the network's form (`ACTOR_FORMAT`: linear layers `pi.<k>` with ReLU
between them and tanh on the output, as `MADDPGTorchRLModule` builds it). This module
reads only those files, with an unpickler that admits nothing but numpy arrays and
dicts, so the placement service loads a policy quickly, in a process without the RL
stack, and a hostile pickle cannot run code. Actions equal the RLlib module's up to
float32 rounding (a test holds them to 1e-5).
"""

from __future__ import annotations

import io
import json
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fabric.errors import FabricError
from policies.env.config import PlacementEnvConfig
from policies.env.layout import Layout
from policies.errors import CheckpointError

PLACEMENT_META = "placement.json"
MODULE_STATE = "module_state.pkl"
ACTOR_FORMAT = "mlp-relu-tanh/v1"  # what placement.json's actor.format must say
STATE_BYTES_MAX = 64 << 20  # an agent's actor weights; the shipped ones are ~30 kB
LAYERS_MAX = 8
_LAYER_KEY = re.compile(r"^pi\.(\d+)\.(weight|bias)$")
_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"),
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "_reconstruct"),
}


@dataclass
class NumpyActors:
    """Trained deterministic actors, one per data center, evaluated in numpy (float32)."""

    layers: dict[str, list[tuple[np.ndarray, np.ndarray]]]  # per agent: (weight, bias) per linear layer
    agents: tuple[str, ...]  # the env's agent order
    layout: Layout
    meta: dict[str, Any] = field(default_factory=dict)
    name: str = "maddpg"

    def act(self, observations: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Each data center's action for its observation."""
        return {a: self.action(a, observations[a]) for a in self.agents}

    def action(self, agent: str, obs: np.ndarray) -> np.ndarray:
        """One data center's action: tanh of the MLP, each entry in [-1, 1]."""
        x = np.asarray(obs, np.float32).reshape(-1)
        layers = self.layers[agent]
        for i, (w, b) in enumerate(layers):
            x = w @ x + b
            if i < len(layers) - 1:
                x = np.maximum(x, 0.0)
        return np.tanh(x).astype(np.float32)


def actor_description(hiddens: list[int], obs_size: int, action_size: int) -> dict[str, Any]:
    """The `actor` entry of placement.json for actors of this shape."""
    return {
        "format": ACTOR_FORMAT,
        "hiddens": [int(h) for h in hiddens],
        "obs_size": int(obs_size),
        "action_size": int(action_size),
    }


def read_meta(path: Path) -> dict[str, Any]:
    """placement.json of an export ({} if absent); CheckpointError if unreadable."""
    meta_file = path / PLACEMENT_META
    if not meta_file.is_file():
        return {}
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{meta_file} is not valid JSON: {e}") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{meta_file} must hold a JSON object")
    return meta


def env_config_in(meta: dict[str, Any]) -> PlacementEnvConfig | None:
    """The env config stored in an export's placement.json, if it has one."""
    raw = meta.get("env_config")
    if not raw:
        return None
    try:
        return PlacementEnvConfig.from_dict(raw)
    except (FabricError, TypeError, ValueError, KeyError, AttributeError) as e:
        raise CheckpointError(f"the env config in {PLACEMENT_META} is not valid: {e}") from None


def layout_for(dcs: int, obs_size: int, action_size: int) -> Layout | None:
    """The placement layout with these sizes for `dcs` data centers, or None if there is none."""
    empty = Layout(dcs=dcs, hosts=0).observation_size
    per_host = Layout(dcs=dcs, hosts=1).observation_size - empty
    hosts, rest = divmod(obs_size - empty, per_host)
    if rest or hosts < 1:
        return None
    layout = Layout(dcs=dcs, hosts=hosts)
    return layout if layout.action_size == action_size else None


def check_fits(layout: Layout, path: Path, *, dcs: int | None, hosts: int | None) -> None:
    """CheckpointError unless actors of `layout` can serve `dcs` data centers of up to `hosts` hosts."""
    if dcs is not None and dcs != layout.dcs:
        raise CheckpointError(f"{path} was trained for {layout.dcs} data centers, not {dcs}")
    if hosts is not None and hosts > layout.hosts:
        raise CheckpointError(
            f"{path} was trained for at most {layout.hosts} hosts per data center, not {hosts}"
        )


def load_numpy_actors(path: str | Path, *, dcs: int | None = None, hosts: int | None = None) -> NumpyActors:
    """Load an export's actors; CheckpointError if missing, unreadable, or not for this fabric's shape."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"no checkpoint at {path}")
    meta = read_meta(path)
    actor = meta.get("actor")
    if not isinstance(actor, dict) or actor.get("format") != ACTOR_FORMAT:
        raise CheckpointError(
            f"{path}: {PLACEMENT_META} does not describe {ACTOR_FORMAT} actors (found {actor!r}); "
            "export it with jobs/train_placement.py"
        )
    agents = meta.get("agents")
    if not isinstance(agents, list) or len(agents) < 2 or not all(isinstance(a, str) for a in agents):
        raise CheckpointError(f"{path}: {PLACEMENT_META} must list the agents (two or more names)")
    sizes = (actor.get("obs_size"), actor.get("action_size"))
    if not all(isinstance(n, int) and 1 <= n <= 1 << 20 for n in sizes):
        raise CheckpointError(f"{path}: {PLACEMENT_META} gives no valid obs_size and action_size")
    layout = layout_for(len(agents), *sizes)
    if layout is None:
        raise CheckpointError(
            f"{path}: observation/action sizes match no placement layout for {len(agents)} DCs"
        )
    check_fits(layout, path, dcs=dcs, hosts=hosts)
    hiddens = actor.get("hiddens")
    if not isinstance(hiddens, list) or not all(isinstance(h, int) for h in hiddens):
        raise CheckpointError(f"{path}: {PLACEMENT_META} must give the actor's hidden layer sizes")
    layers = {a: _read_layers(path / a / MODULE_STATE, layout, hiddens) for a in agents}
    return NumpyActors(layers=layers, agents=tuple(agents), layout=layout, meta=meta)


class _WeightsUnpickler(pickle.Unpickler):
    """Admits numpy arrays and (ordered) dicts only: a checkpoint cannot run code when read."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in actor weights")
        return super().find_class(module, name)


def _read_layers(state_file: Path, layout: Layout, hiddens: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    try:
        raw = state_file.read_bytes()
    except OSError as e:
        raise CheckpointError(f"cannot read {state_file}: {e}") from None
    if len(raw) > STATE_BYTES_MAX:
        raise CheckpointError(f"{state_file} is larger than {STATE_BYTES_MAX} bytes")
    try:
        state = _WeightsUnpickler(io.BytesIO(raw)).load()
    except Exception as e:  # any malformed pickle: not loadable
        raise CheckpointError(
            f"{state_file} is not a file of actor weights: {type(e).__name__}: {e}"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{state_file} holds {type(state).__name__}, not a dict of weights")
    found: dict[int, dict[str, np.ndarray]] = {}
    for key, value in state.items():
        m = _LAYER_KEY.match(str(key))
        if m and isinstance(value, np.ndarray):
            found.setdefault(int(m.group(1)), {})[m.group(2)] = value.astype(np.float32)
    if not 1 <= len(found) <= LAYERS_MAX:
        raise CheckpointError(
            f"{state_file}: expected 1-{LAYERS_MAX} actor layers pi.<k>, found {len(found)}"
        )
    layers, width = [], layout.observation_size
    for k in sorted(found):
        w, b = found[k].get("weight"), found[k].get("bias")
        if w is None or b is None or w.ndim != 2 or w.shape[1] != width or b.shape != (w.shape[0],):
            raise CheckpointError(f"{state_file}: layer pi.{k} does not chain (expected {width} inputs)")
        if not (np.isfinite(w).all() and np.isfinite(b).all()):
            raise CheckpointError(f"{state_file}: layer pi.{k} holds non-finite weights")
        layers.append((w, b))
        width = w.shape[0]
    if width != layout.action_size:
        raise CheckpointError(f"{state_file}: the actor outputs {width} values, not {layout.action_size}")
    if [w.shape[0] for w, _ in layers[:-1]] != list(hiddens):
        raise CheckpointError(
            f"{state_file}: hidden layers {[w.shape[0] for w, _ in layers[:-1]]}, "
            f"{PLACEMENT_META} says {list(hiddens)}"
        )
    return layers
