"""Checkpoints: weights plus everything needed to use them correctly, loadable with weights_only=True.

Two kinds: "trading" (seed 000's 7-action trading environment, backend.rl.env; legacy files without a kind are
this one, 3-action ones included) and "sizing" (the signal-conditioned sizing environment,
backend.rl.signal_env: its menu of exposures, the caps it was trained under). A file says which it is, and
`load(path, kind=...)` refuses the other kind, or an observation this code does not build, with the reason."""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch

from backend.rl import signal_env
from backend.rl.env import LEGACY_3_TO_7, N_ACTIONS, EnvConfig
from backend.rl.observation import ObservationSpec
from backend.rl.ppo import Agent, PPOConfig

FORMAT = "sizer-ppo"
FORMAT_VERSION = 1
KINDS = {"trading": "seed 000's trading environment (7 actions: HOLD, BUY/SELL 25/50/75%)",
         "sizing": "the signal sizing environment (an exposure from the menu per signal)"}


class CheckpointError(ValueError):
    """The file is not a checkpoint this code can serve; the message says why."""


@dataclass
class LoadedPolicy:
    agent: Agent
    spec: ObservationSpec
    env: EnvConfig
    n_actions: int
    meta: dict
    version: str  # content hash: which weights made a decision
    kind: str = "trading"
    menu: tuple[float, ...] = ()  # sizing: the exposures its actions stand for

    @torch.no_grad()
    def probabilities(self, obs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(..., actions) probabilities with invalid actions at exactly 0. A legacy 3-action model's
        HOLD/BUY/SELL become HOLD/BUY_50/SELL_50 (seed 000)."""
        logits = self.agent.logits(self.agent._encode(obs.reshape(-1, self.spec.size)))
        if self.n_actions == 3:
            full = torch.full((logits.shape[0], N_ACTIONS), -torch.inf)
            full[:, list(LEGACY_3_TO_7)] = logits
            logits = full
        logits = logits.masked_fill(~mask.reshape(-1, logits.shape[1]), -torch.inf)
        return torch.softmax(logits, dim=-1).reshape(mask.shape)


def greedy(policy: LoadedPolicy) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The policy's most probable valid action, legacy mapping included (for evaluate.validate)."""
    return lambda obs, mask: policy.probabilities(obs, mask).argmax(dim=-1)


def save(path: Path, agent: Agent, spec: ObservationSpec, config: PPOConfig, *, data_window: dict,
         metrics: dict, n_actions: int = N_ACTIONS, kind: str = "trading", sizing: dict | None = None) -> None:
    """`sizing` (kind "sizing"): {"menu": [...], "caps": {...}}, what the environment offered and capped."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "kind": kind,
            **({"sizing": sizing} if sizing else {}),
            "n_actions": n_actions,
            "state_dict": {k: v.detach().cpu() for k, v in agent.state_dict().items()},
            "observation_spec": spec.to_dict(),
            "config": asdict(config),
            "data_window": data_window,
            "metrics": metrics,
            "created_at": datetime.now(timezone.utc).isoformat(),
        },
        path,
    )


def load(path: Path, device: str | torch.device = "cpu", kind: str | None = None) -> LoadedPolicy:
    try:
        blob = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}") from None
    except Exception as exc:  # pickle errors, truncated files, non-weights content
        raise CheckpointError(f"{path} is not a loadable weights-only checkpoint: {exc}") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a {FORMAT} checkpoint")
    if blob.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format {blob.get('format_version')}, this code reads {FORMAT_VERSION}")
    found = blob.get("kind", "trading")
    if found not in KINDS:
        raise CheckpointError(f"{path} is of an unknown kind {found!r}; this code reads {', '.join(KINDS)}")
    if kind is not None and found != kind:
        raise CheckpointError(f"{path} is a {found} checkpoint ({KINDS[found]}); a {kind} checkpoint "
                              f"({KINDS[kind]}) is needed here")
    n_actions = blob.get("n_actions", 3)
    menu = tuple(blob.get("sizing", {}).get("menu", ()))
    if found == "sizing" and (len(menu) != n_actions or not menu or menu[0] != 0):
        raise CheckpointError(f"{path}: a sizing checkpoint needs a menu of {n_actions} exposures starting at 0 "
                              f"(the skip), has {list(menu)}")
    if found == "trading" and n_actions not in (3, N_ACTIONS):
        raise CheckpointError(f"{path} has {n_actions} actions; this code serves 7 (or legacy 3)")
    # SpecMismatch (a ValueError) when the features differ from what this code builds for that kind
    spec = ObservationSpec.from_dict(blob["observation_spec"], *((signal_env.OBSERVED,) if found == "sizing" else ()))
    cfg = blob["config"]
    agent = Agent(spec, hidden=cfg["hidden"], gru=cfg["gru"], n_actions=n_actions,
                  ordinal=cfg.get("ordinal", False), activation=cfg.get("activation", "tanh")).to(device)
    agent.load_state_dict(blob["state_dict"])
    agent.eval()
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]
    meta = {k: blob[k] for k in ("data_window", "metrics", "created_at", "config")} | {"sizing": blob.get("sizing")}
    return LoadedPolicy(agent, spec, EnvConfig(**cfg["env"]), n_actions, meta, f"ppo-{digest}", found, menu)
