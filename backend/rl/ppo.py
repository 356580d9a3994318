"""Masked PPO for the sizing and regime environments, in the style of CleanRL's ppo.py: read it top to bottom.

Config -> environment -> Agent (MLP, or a GRU over the feature window) -> preallocated rollout tensors
(n_steps, n_envs, ...) -> GAE -> clipped surrogate with entropy bonus, value loss, gradient clipping and a
linearly annealed learning rate. Invalid actions are masked out of the categorical distribution, in training
and at inference. Logged names: losses/policy_loss, losses/value_loss, losses/entropy, losses/approx_kl,
losses/clipfrac, charts/SPS, charts/episodic_return and the collapse monitor: collapse/dominance,
collapse/action_entropy, collapse/repeats (mean run of one action), collapse/trade_frequency. With a
continuous environment the policy is a Gaussian and the monitor counts the env's named action classes. The
policy has as many actions as the environment names, and reads its observation layout from `env.spec`.
"""
from __future__ import annotations

import csv
import ctypes
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical, Normal

from backend.rl.env import N_ACTIONS, EnvConfig, SizingEnv
from backend.rl.observation import ObservationSpec
from backend.rl.regime_env import RegimeEnv


@dataclass
class PPOConfig:
    seed: int = 1
    """Seeds torch, the environment's start offsets and so the whole run."""
    total_timesteps: int = 2_000_000
    """Environment steps over all environments."""
    n_envs: int = 256
    """Parallel environments (one tensor batch)."""
    n_steps: int = 64
    """Steps per environment per rollout."""
    learning_rate: float = 3e-4
    """Adam step size at the start; annealed linearly to 0 when anneal_lr."""
    anneal_lr: bool = True
    """Linear learning-rate annealing."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    n_minibatches: int = 8
    """Minibatches per epoch."""
    update_epochs: int = 4
    """Epochs over each rollout."""
    clip_coef: float = 0.2
    """Surrogate clipping coefficient."""
    ent_coef: float = 0.01
    """Entropy bonus coefficient."""
    vf_coef: float = 0.5
    """Value loss coefficient."""
    max_grad_norm: float = 0.5
    """Gradient clipping norm."""
    reward_scale: float = 100.0
    """Rewards are multiplied by this for learning (per-bar account changes are tiny)."""
    hidden: int = 128
    """Width of the MLP layers (and of the GRU state)."""
    gru: bool = False
    """Encode the feature window with a GRU instead of flattening it into the MLP."""
    activation: str = "tanh"
    """The MLP's activation, tanh or relu (relu: the same learning here at a fraction of tanh's CPU cost)."""
    ordinal: bool = False
    """Actions are ordered (a menu of exposures): the policy is a discretised Gaussian over the action index
    (the net gives its centre and width) instead of one free logit per action. See `Agent`."""
    device: str = "auto"
    """auto: CUDA when present, else the CPU."""
    env: EnvConfig = field(default_factory=EnvConfig)
    """The environment's account simulation (seed 000)."""

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


def layer_init(layer: nn.Linear, std: float = np.sqrt(2), bias: float = 0.0) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


class Agent(nn.Module):
    """Masked categorical policy, or with `continuous` a Gaussian one (a state-dependent mean, a learned
    state-independent log standard deviation; the environment clips samples to [-1, 1], as in CleanRL's
    ppo_continuous_action).

    With `ordinal` (ordered actions, such as a menu of exposures) the logit of action k of n is
    -((k / (n - 1) - 1/2 - centre) / width)^2 / 2: unimodal, as the expected log growth of an exposure is concave. With a
    free logit per action, an exposure that loses on most early samples is pushed to probability ~0 and its
    policy gradient (proportional to its probability) cannot bring it back where it later turns out best; here
    moving the centre moves every action's logit, so the policy climbs to the best exposure of each state."""

    def __init__(self, spec: ObservationSpec, hidden: int = 128, gru: bool = False, n_actions: int = N_ACTIONS,
                 continuous: bool = False, ordinal: bool = False, activation: str = "tanh"):
        super().__init__()
        self.continuous, self.ordinal = continuous, ordinal
        self.window, self.n_features = spec.window, len(spec.market_features)
        self.n_account = len(spec.account_features)
        self.gru = nn.GRU(self.n_features, hidden, batch_first=True) if gru else None
        encoded = (hidden if gru else self.window * self.n_features) + self.n_account
        act = {"tanh": nn.Tanh, "relu": nn.ReLU}[activation]
        self.trunk = nn.Sequential(layer_init(nn.Linear(encoded, hidden)), act(),
                                   layer_init(nn.Linear(hidden, hidden)), act())
        self.actor = layer_init(nn.Linear(hidden, 1 if continuous else 2 if ordinal else n_actions), std=0.01)
        if ordinal:
            self.register_buffer("position", torch.linspace(-0.5, 0.5, n_actions), persistent=False)
        if continuous:
            self.actor_logstd = nn.Parameter(torch.full((1,), -0.5))
        self.critic = layer_init(nn.Linear(hidden, 1), std=1.0)

    def _encode(self, obs: torch.Tensor) -> torch.Tensor:
        market, account = obs[:, : -self.n_account], obs[:, -self.n_account:]
        if self.gru is not None:
            _, h = self.gru(market.view(-1, self.window, self.n_features))
            market = h[-1]
        return self.trunk(torch.cat([market, account], dim=1))

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The actor's output for encoded observations: every action's logit (the Gaussian's mean if continuous)."""
        out = self.actor(hidden)
        if not self.ordinal:
            return out
        centre, log_width = out[:, :1], out[:, 1:]  # a centre 0 and a width 1 at initialisation: near uniform
        # a width of at least e^-8 of the menu: as peaked as a policy gets, and no overflow to -inf everywhere
        return -0.5 * ((self.position - centre) * torch.exp(-log_width.clamp(min=-8.0))) ** 2

    def get_value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(self._encode(obs)).squeeze(-1)

    @torch.no_grad()
    def greedy(self, obs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The most probable valid action, or the Gaussian's mean (evaluation, serving)."""
        out = self.logits(self._encode(obs))
        if self.continuous:
            return out.squeeze(-1).clamp(-1.0, 1.0)
        return out.masked_fill(~mask, -torch.inf).argmax(dim=-1)

    def log_policy(self, obs: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-probabilities of every action (-1e8 where masked), value)."""
        hidden = self._encode(obs)
        logits = self.logits(hidden).masked_fill(~mask, -1e8)
        return torch.log_softmax(logits, dim=-1), self.critic(hidden).squeeze(-1)

    def get_action_and_value(self, obs: torch.Tensor, mask: torch.Tensor, action: torch.Tensor | None = None):
        hidden = self._encode(obs)
        out = self.logits(hidden)
        if self.continuous:
            dist = Normal(out.squeeze(-1), self.actor_logstd.exp())
        else:
            dist = Categorical(logits=out.masked_fill(~mask, -1e8))
        if action is None:
            action = dist.sample()
        return action, dist.log_prob(action), dist.entropy(), self.critic(hidden).squeeze(-1)


def sample(p: torch.Tensor) -> torch.Tensor:
    """One action per row of probabilities p (rows summing to about 1), by inverting the cumulative sum
    (torch.multinomial draws an exponential per action: several times slower on the CPU)."""
    cdf = p.cumsum(-1)
    first_above = (cdf <= torch.rand_like(cdf[:, :1]) * cdf[:, -1:]).sum(-1)
    # rounding may put the draw at the total: the last action with any probability
    last = (torch.arange(p.shape[-1], device=p.device) * (p > 0)).amax(-1)
    return torch.minimum(first_above, last)


def collapse_stats(action_counts: torch.Tensor) -> tuple[float, float]:
    """(dominance: share of the most frequent action, entropy of the action frequencies in nats)."""
    p = action_counts.float() / action_counts.sum().clamp_min(1)
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return float(p.max()), float(entropy)


def keep_freed_memory() -> None:
    """Keep freed memory in glibc's heap. By default a freed block above 128 KB goes back to the OS and the next
    one is mapped afresh, so on the CPU every activation of a large batch page-faults: 40% of a signal sizing
    training run measured. Process-wide; a no-op where the C library is not glibc."""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD: free memory kept at the heap's top
    mallopt(-2, 64 << 20)  # M_TOP_PAD: grow the heap by this much at a time
    mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: blocks below this come from the heap


def train(
    config: PPOConfig,
    env: SizingEnv | RegimeEnv,
    out_dir: Path | None = None,
    on_update: Callable[[int, int, dict], None] | None = None,
) -> tuple[Agent, list[dict]]:
    torch.manual_seed(config.seed)
    device = env.device
    if device.type == "cpu":
        keep_freed_memory()
    n_classes = len(env.action_names)
    agent = Agent(env.spec, config.hidden, config.gru, n_classes, env.continuous, config.ordinal,
                  config.activation).to(device)
    optimizer = torch.optim.Adam(agent.parameters(), lr=config.learning_rate, eps=1e-5)

    n, steps = env.n, config.n_steps
    batch_size = n * steps
    minibatch_size = batch_size // config.n_minibatches
    n_updates = max(1, config.total_timesteps // batch_size)

    obs, mask = env.reset()
    obs_buf = torch.zeros((steps, n, obs.shape[1]), device=device)
    mask_buf = torch.zeros((steps, n, mask.shape[1]), dtype=torch.bool, device=device)
    actions = torch.zeros((steps, n), dtype=torch.float32 if env.continuous else torch.long, device=device)
    logprobs = torch.zeros((steps, n), device=device)
    rewards = torch.zeros((steps, n), device=device)
    dones = torch.zeros((steps, n), device=device)
    values = torch.zeros((steps, n), device=device)
    # an environment that returns every action's reward (info["rewards"], one-step decisions: gamma 0) gets the
    # surrogate's expectation over actions computed exactly, each action's advantage its reward less the policy's
    # expected reward on the same step, instead of estimated from the one action sampled
    exact = getattr(env, "counterfactual", False)
    if exact:
        if config.gamma != 0:
            raise ValueError("an environment of one-step decisions with every action's reward trains with gamma 0")
        old_logp = torch.zeros((steps, n, n_classes), device=device)
        all_rewards = torch.zeros((steps, n, n_classes), device=device)

    done = torch.zeros(n, device=device)
    last_class = torch.full((n,), -1, device=device)
    history: list[dict] = []
    started = time.perf_counter()
    global_step = 0
    for update in range(1, n_updates + 1):
        if config.anneal_lr:
            optimizer.param_groups[0]["lr"] = (1.0 - (update - 1.0) / n_updates) * config.learning_rate
        episode_returns: list[torch.Tensor] = []
        # counted as tensors: no synchronisation with the device inside the rollout
        action_counts = torch.zeros(n_classes, device=device)
        invalid, switches, trades = (torch.zeros((), dtype=torch.long, device=device) for _ in range(3))

        # --- rollout -------------------------------------------------------------------------------
        with torch.no_grad():
            for step in range(steps):
                global_step += n
                obs_buf[step], mask_buf[step], dones[step] = obs, mask, done
                if exact:
                    old_logp[step], value = agent.log_policy(obs, mask)
                    action = sample(old_logp[step].exp())
                    logprob = old_logp[step].gather(1, action[:, None]).squeeze(1)
                else:
                    action, logprob, _, value = agent.get_action_and_value(obs, mask)
                actions[step], logprobs[step], values[step] = action, logprob, value
                obs, mask, reward, terminated, truncated, info = env.step(action)
                if exact:
                    all_rewards[step] = info["rewards"] * config.reward_scale
                reward = reward * config.reward_scale
                if config.gamma and truncated.any():  # a window's end is not the end of the world: bootstrap
                    final_values = agent.get_value(info["final_obs"])
                    finished = (terminated | truncated).nonzero().squeeze(1)
                    cut = truncated[finished]
                    reward[finished[cut]] += config.gamma * final_values[cut]
                rewards[step] = reward
                done = (terminated | truncated).float()
                action_class = env.action_class(action)
                action_counts += torch.bincount(action_class, minlength=n_classes)
                switches += (action_class != last_class).sum()
                last_class = action_class
                trades += (info["traded"] > 0).sum()
                invalid += info["invalid"].sum()
                if "episode_return" in info:
                    episode_returns.append(info["episode_return"])

        # --- GAE (or every action's advantage) -----------------------------------------------------------
        with torch.no_grad():
            if exact:
                old_p = old_logp.exp()
                returns = (old_p * all_rewards).sum(-1)
                advantages = all_rewards - returns[..., None]
                advantages /= ((old_p * advantages**2).sum(-1).mean().sqrt() + 1e-8)
            else:
                next_value = agent.get_value(obs)
                advantages = torch.zeros_like(rewards)
                last = torch.zeros(n, device=device)
                for t in reversed(range(steps)):
                    next_nonterminal = 1.0 - (done if t == steps - 1 else dones[t + 1])
                    next_values = next_value if t == steps - 1 else values[t + 1]
                    delta = rewards[t] + config.gamma * next_values * next_nonterminal - values[t]
                    last = delta + config.gamma * config.gae_lambda * next_nonterminal * last
                    advantages[t] = last
                returns = advantages + values

        # --- the clipped update ------------------------------------------------------------------------
        b_obs, b_mask = obs_buf.reshape(batch_size, -1), mask_buf.reshape(batch_size, -1)
        b_actions, b_logprobs = actions.reshape(-1), logprobs.reshape(-1)
        b_adv, b_returns = advantages.reshape(-1), returns.reshape(-1)
        clipfracs, approx_kl = [], torch.tensor(0.0)
        if exact:
            old_logp_flat, old_p_flat = old_logp.reshape(batch_size, -1), old_p.reshape(batch_size, -1)
            adv_flat = advantages.reshape(batch_size, -1)
        for _ in range(config.update_epochs):
            batches = [slice(None)] if config.n_minibatches == 1 else \
                torch.randperm(batch_size, device=device).split(minibatch_size)
            for mb in batches:
                if exact:
                    pg_loss, v_loss, entropy_loss, approx_kl, clipped = _exact_losses(
                        agent, config, b_obs[mb], b_mask[mb], old_logp_flat[mb], old_p_flat[mb], adv_flat[mb],
                        b_returns[mb])
                    clipfracs.append(clipped)
                    _step(agent, optimizer, config, pg_loss - config.ent_coef * entropy_loss + config.vf_coef * v_loss)
                    continue
                _, new_logprob, entropy, new_value = agent.get_action_and_value(b_obs[mb], b_mask[mb], b_actions[mb])
                log_ratio = new_logprob - b_logprobs[mb]
                ratio = log_ratio.exp()
                with torch.no_grad():
                    approx_kl = ((ratio - 1) - log_ratio).mean()
                    clipfracs.append(((ratio - 1.0).abs() > config.clip_coef).float().mean())
                adv = b_adv[mb]
                adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                pg_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - config.clip_coef, 1 + config.clip_coef)).mean()
                v_loss = 0.5 * ((new_value - b_returns[mb]) ** 2).mean()
                entropy_loss = entropy.mean()
                _step(agent, optimizer, config, pg_loss - config.ent_coef * entropy_loss + config.vf_coef * v_loss)

        dominance, action_entropy = collapse_stats(action_counts)
        finished = torch.cat(episode_returns) if episode_returns else torch.empty(0)
        row = {
            "update": update,
            "global_step": global_step,
            "charts/learning_rate": optimizer.param_groups[0]["lr"],
            "charts/SPS": int(global_step / (time.perf_counter() - started)),
            "charts/episodic_return": float(finished.mean()) if len(finished) else None,
            "charts/episodes": int(len(finished)),
            "charts/invalid_actions": int(invalid),
            "losses/policy_loss": pg_loss.item(),
            "losses/value_loss": v_loss.item(),
            "losses/entropy": entropy_loss.item(),
            "losses/approx_kl": float(approx_kl),
            "losses/clipfrac": float(torch.stack(clipfracs).mean()),
            "collapse/dominance": dominance,
            "collapse/action_entropy": action_entropy,
            "collapse/repeats": batch_size / max(1, int(switches)),
            "collapse/trade_frequency": int(trades) / batch_size,
            **{f"actions/{i}": int(c) for i, c in enumerate(action_counts.tolist())},
        }
        history.append(row)
        if on_update:
            on_update(update, n_updates, row)
    if out_dir is not None:
        _write_logs(out_dir, history, config)
    return agent, history


def _step(agent: Agent, optimizer: torch.optim.Optimizer, config: PPOConfig, loss: torch.Tensor) -> None:
    optimizer.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_(agent.parameters(), config.max_grad_norm)
    optimizer.step()


def _exact_losses(agent: Agent, config: PPOConfig, obs: torch.Tensor, mask: torch.Tensor, old_logp: torch.Tensor,
                  old_p: torch.Tensor, adv: torch.Tensor, returns: torch.Tensor):
    """The clipped surrogate as an expectation over the old policy's actions, each with its own advantage."""
    logp, value = agent.log_policy(obs, mask)
    log_ratio = torch.where(mask, logp - old_logp, 0.0)
    ratio = log_ratio.exp()
    surrogate = torch.min(ratio * adv, ratio.clamp(1 - config.clip_coef, 1 + config.clip_coef) * adv)
    pg_loss = -(old_p * surrogate).sum(-1).mean()
    entropy = -(old_p * ratio * torch.where(mask, logp, 0.0)).sum(-1).mean()  # old_p * ratio: the new p
    with torch.no_grad():
        approx_kl = (old_p * ((ratio - 1) - log_ratio)).sum(-1).mean()
        clipped = (old_p * ((ratio - 1).abs() > config.clip_coef)).sum(-1).mean()
    return pg_loss, 0.5 * ((value - returns) ** 2).mean(), entropy, approx_kl, clipped


def _write_logs(out_dir: Path, rows: list[dict], config: PPOConfig) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "train_log.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out_dir / "train_log.json").write_text(json.dumps({"config": asdict(config), "updates": rows}, indent=1))
