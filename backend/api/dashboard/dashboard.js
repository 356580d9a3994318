"use strict";
// The dashboard: read-only, it polls the same documented endpoints any client uses (see /docs).

const POLL_MS = 3000;
const KEY_STORE = "sizer.apiKey";
const SVG = "http://www.w3.org/2000/svg";

class NeedsKey extends Error {}

async function api(path) {
  const key = localStorage.getItem(KEY_STORE);
  const response = await fetch(path, { headers: key ? { "X-API-Key": key } : {} });
  if (response.status === 401) throw new NeedsKey((await response.json()).detail);
  if (!response.ok) throw new Error(`${path} answered ${response.status}: ${(await response.text()).slice(0, 300)}`);
  return response.json();
}

// --- small helpers ---------------------------------------------------------------------------------
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  node.append(...children.map((c) => (c instanceof Node ? c : document.createTextNode(c ?? ""))));
  return node;
}

function svgEl(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

const num = (x, digits = 2) => (x === null || x === undefined ? "–" : Number(x).toLocaleString("en-US", {
  minimumFractionDigits: digits, maximumFractionDigits: digits }));
const usd = (x) => (x === null || x === undefined ? "–" : (x < 0 ? "-$" : "$") + num(Math.abs(x)));
const day = (t) => (t ? t.slice(0, 10) : "–");

function fillRows(table, rows) {
  table.tBodies[0].replaceChildren(...rows);
}

function cell(value, cls) {
  return el("td", cls ? { class: cls } : {}, value);
}

// A line chart of one or two series sharing the x axis (labels: first and last x, min and max y).
function lineChart(svg, labels, series) {
  const width = svg.clientWidth || 500, height = svg.clientHeight || 180, left = 62, bottom = 18, top = 6;
  const values = series.flatMap((s) => s.values).filter((v) => v !== null);
  svg.replaceChildren();
  if (!values.length) {
    svg.append(svgEl("text", { x: left, y: height / 2 }, "no data yet"));
    return;
  }
  let lo = Math.min(...values), hi = Math.max(...values);
  if (lo === hi) { lo -= Math.abs(lo) * 0.01 || 1; hi += Math.abs(hi) * 0.01 || 1; }
  const n = labels.length;
  const x = (i) => left + (n > 1 ? (i * (width - left - 4)) / (n - 1) : (width - left) / 2);
  const y = (v) => top + ((hi - v) * (height - top - bottom)) / (hi - lo);
  svg.append(svgEl("line", { class: "axis", x1: left, x2: width, y1: height - bottom, y2: height - bottom }),
             svgEl("line", { class: "axis", x1: left, x2: left, y1: top, y2: height - bottom }),
             svgEl("text", { x: left - 4, y: top + 8, "text-anchor": "end" }, num(hi, hi - lo < 10 ? 3 : 0)),
             svgEl("text", { x: left - 4, y: height - bottom, "text-anchor": "end" }, num(lo, hi - lo < 10 ? 3 : 0)),
             svgEl("text", { x: left, y: height - 4 }, labels[0]),
             svgEl("text", { x: width - 4, y: height - 4, "text-anchor": "end" }, labels[n - 1]));
  if (lo < 0 && hi > 0) svg.append(svgEl("line", { class: "axis", x1: left, x2: width, y1: y(0), y2: y(0) }));
  series.forEach((s, k) => {
    const points = s.values.map((v, i) => (v === null ? null : `${x(i).toFixed(1)},${y(v).toFixed(1)}`)).filter(Boolean);
    svg.append(svgEl("polyline", { class: k ? "line second" : "line", points: points.join(" ") }));
  });
}

// --- the header: the clock and the trading state ----------------------------------------------------
async function showClock() {
  const c = await api("/v1/clock");
  const parts = c.source === "simulator"
    ? [`market ${day(c.now)}`, c.paused ? "paused" : `running ×${c.speed}`,
       `a bar every ${num(c.bar_seconds, c.bar_seconds < 10 ? 2 : 0)} s`, `${c.bars_left} bars left (to ${day(c.ends_at)})`]
    : [`${c.broker}'s clock ${c.now.slice(0, 16).replace("T", " ")} UTC`, `open trades polled every ${num(c.bar_seconds, 0)} s`];
  document.getElementById("clock").textContent = parts.join(" · ");
}

async function showTradingState() {
  const s = await api("/v1/trading-state");
  const badge = document.getElementById("state");
  badge.textContent = s.state;
  badge.className = `badge ${s.state}`;
  const changes = s.changes.slice(0, 5).map((c) => el("li", {}, `${day(c.at)} ${c.from_state} → ${c.to_state} (${c.cause}): ${c.reason}`));
  document.getElementById("trading-state").replaceChildren(
    el("p", {}, el("b", {}, s.state), s.cause ? ` set by ${s.cause}: ${s.reason}` : " (no protection tripped)"),
    el("p", { class: "muted" }, `protections: ${s.protections.join(", ") || "none"}`),
    changes.length ? el("ul", {}, ...changes) : el("p", { class: "muted" }, "no changes yet"));
}

// --- the trading tab ---------------------------------------------------------------------------------
async function showAccount() {
  const { account, positions } = await api("/v1/positions");
  const card = (label, value) => el("div", { class: "card" }, label, el("b", {}, value));
  document.getElementById("account").replaceChildren(
    card("equity", usd(account.equity)), card("cash", usd(account.cash)),
    card("buying power", usd(account.buying_power)), card("exposure", num(account.exposure, 3)),
    card("open positions", String(positions.length)));
  fillRows(document.getElementById("positions"), positions.length ? positions.map((p) => el("tr", {},
    cell(p.symbol), cell(num(p.quantity, 4), "num"), cell(num(p.avg_entry_price), "num"), cell(num(p.market_price), "num"),
    cell(usd(p.quantity * p.market_price), "num"), cell(usd((p.market_price - p.avg_entry_price) * p.quantity), "num"),
  )) : [el("tr", {}, el("td", { colspan: 6, class: "muted" }, "no open positions"))]);
}

async function showEquity() {
  const { samples } = await api("/v1/equity");
  const labels = samples.map((s) => day(s.at));
  lineChart(document.getElementById("equity-chart"), labels, [{ values: samples.map((s) => s.equity) }]);
  lineChart(document.getElementById("exposure-chart"), labels, [{ values: samples.map((s) => s.exposure) }]);
}

async function showTrades() {
  const { items } = await api("/v1/trades?limit=25");
  fillRows(document.getElementById("trades"), items.length ? items.map((t) => el("tr", {},
    cell(String(t.id), "num"), cell(day(t.decided_at)), cell(t.symbol), cell(t.side),
    cell(t.shadow ? `${t.status} (shadow)` : t.status), cell(t.policy), cell(t.rl_state_key ?? "–"),
    cell(num(t.size_usd / t.equity_at_entry, 3), "num"), cell(num(t.leverage), "num"),
    cell(t.pnl_usd === null ? "–" : usd(t.pnl_usd), "num"), cell(t.reasoning, "reasoning"),
  )) : [el("tr", {}, el("td", { colspan: 11, class: "muted" }, "no signals yet"))]);
}

async function showReconciliation() {
  const r = await api("/v1/reconciliation");
  document.getElementById("reconciliation").replaceChildren(
    el("p", {}, `${day(r.at)} against ${r.broker}: `, el("b", {}, r.clean ? "clean" : `${r.differences.length} differences`)),
    ...(r.differences.length ? [el("ul", {}, ...r.differences.map((d) => el("li", {}, d)))] : []));
}

// --- the learning tab --------------------------------------------------------------------------------
function shown(v) {  // a value of a description (the serving policy's, an A/B arm's), in words
  if (v === null || v === undefined) return "–";
  if (Array.isArray(v)) return v.length ? v.join("; ") : "none";
  if (v !== null && typeof v === "object") return Object.entries(v).map(([k, n]) => `${k} ${n}`).join(", ");
  if (typeof v === "number") return Number.isInteger(v) ? v.toLocaleString("en-US") : num(v, 3);
  return String(v);
}

async function showAgent() {
  const a = await api("/v1/agent");
  const rows = [["policy", a.policy], ["serving", a.serving.summary], ["reward", a.reward_fn], ["trades learned from", a.total_updates],
    ["last learned", a.last_updated ? a.last_updated.slice(0, 19).replace("T", " ") : "never"],
    ["recent win rate", a.recent_win_rate === null ? "–" : `${num(100 * a.recent_win_rate, 1)}% of ${a.win_rate_window}`],
    ["confidence z", a.confidence_z], ["prior trades", a.prior_trades], ["horizon (trades)", a.horizon_trades ?? "none"],
    ["exploration", `${num(a.epsilon, 3)} (min ${a.epsilon_min}, decay ${a.epsilon_decay})`],
    ["table seen", `${a.visited_states} of ${a.states} states, ${a.visited_cells} cells, ${a.actions} exposures`],
    ["decisions for bots", Object.entries(a.decisions).map(([k, v]) => `${k} ${v}`).join(", ") || "none"],
    ["trading state", a.trading_state],
    ...Object.entries(a.serving).filter(([k]) => !["policy", "summary"].includes(k))
      .map(([k, v]) => [`serving: ${k.replace(/_/g, " ")}`, shown(v)])];
  document.getElementById("agent").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, String(v))]));
  return a.menu;
}

const ARM_ROWS = ["signals", "trades", "win_rate", "avg_r_multiple", "mean_log_growth", "max_drawdown", "sharpe",
  "recovery_days", "total_pnl"];

async function showAB() {
  const ab = await api("/v1/ab");
  const d = ab.log_growth_difference;
  const about = ab.enabled
    ? `${ab.rl_policy} sizes ${num(100 * ab.rl_share, 0)}% of the ${ab.unit === "symbol" ? "symbols" : "signals"}, ${ab.control} the rest: `
    : "off (AB_ENABLED); trades sized while it was on still count: ";
  const table = el("table", { id: "ab-arms" },
    el("thead", {}, el("tr", {}, el("th", {}, ""), el("th", {}, "rl"), el("th", {}, "control"))),
    el("tbody", {}, ...ARM_ROWS.map((k) => el("tr", {}, el("th", {}, k.replace(/_/g, " ")),
      cell(shown(ab.arms.rl[k])), cell(shown(ab.arms.control[k]))))));
  const difference = d
    ? `rl - control, mean log growth per signal: ${num(d.mean, 5)} (${num(100 * (1 - ab.alpha), 0)}% interval ` +
      `${num(d.ci[0], 5)} .. ${num(d.ci[1], 5)}, bootstrap ${num(d.bootstrap_ci[0], 5)} .. ${num(d.bootstrap_ci[1], 5)}), ` +
      `p = ${num(d.p_value, 3)}; signals still needed for ${num(100 * ab.power, 0)}% power: ${ab.trades_still_needed ?? "–"}`
    : "no difference yet: each arm needs two closed signals";
  document.getElementById("ab").replaceChildren(el("p", {}, about, el("b", { id: "ab-verdict" }, ab.verdict)), table,
    el("p", { class: "muted" }, difference));
}

async function showRewards() {
  const { items } = await api("/v1/outcomes?limit=500");
  const outcomes = items.reverse();  // oldest first
  let sum = 0;
  lineChart(document.getElementById("reward-chart"), outcomes.map((o) => day(o.closed_at)),
            [{ values: outcomes.map((o) => o.reward) }, { values: outcomes.map((o) => (sum += o.reward)) }]);
}

async function qCells() {
  const cells = [];
  for (let offset = 0; ; offset += 500) {
    const page = await api(`/v1/qtable?limit=500&offset=${offset}`);
    cells.push(...page.items);
    if (cells.length >= page.total || !page.items.length) return cells;
  }
}

// red: an average loss, blue: an average gain; the strongest colour is the largest |q| in the table
function heat(q, scale) {
  const a = Math.min(1, Math.abs(q) / scale) * 0.85;
  return q < 0 ? `rgba(198, 40, 40, ${a})` : `rgba(21, 101, 192, ${a})`;
}

async function showQTable(menu) {
  const cells = (await qCells()).filter((c) => c.visits > 0);
  const states = new Map();
  for (const c of cells) {
    if (!states.has(c.state_key)) states.set(c.state_key, new Map());
    states.get(c.state_key).set(Number(c.action_key), c);
  }
  const keys = [...states.keys()].sort((a, b) => a.includes("*") - b.includes("*") || a.localeCompare(b));
  const scale = Math.max(1e-9, ...cells.map((c) => Math.abs(c.q)));
  const table = document.getElementById("qtable");
  table.tHead.replaceChildren(el("tr", {}, el("th", {}, "state (pooled levels: *)"), ...menu.map((e) => el("th", {}, String(e))),
                                 el("th", {}, "greedy")));
  fillRows(table, keys.length ? keys.map((key) => {
    const row = states.get(key);
    const greedy = [...row.values()].reduce((best, c) => (best === null || c.q > best.q ? c : best), null);
    return el("tr", {}, el("td", { class: "state" }, key), ...menu.map((e) => {
      const c = row.get(e);
      return c ? el("td", { style: `background: ${heat(c.q, scale)}`, title: `q ${num(c.q, 4)}, ${c.visits} visits` }, String(c.visits))
               : el("td", { class: "muted" }, "");
    }), el("td", {}, el("b", {}, greedy.action_key)));
  }) : [el("tr", {}, el("td", { colspan: menu.length + 2, class: "muted" }, "nothing learned yet"))]);
}

// --- tabs, the key and the poll ----------------------------------------------------------------------
const tab = () => (location.hash === "#learning" ? "learning" : "trading");

function showTab() {
  for (const name of ["trading", "learning"]) {
    document.getElementById(name).hidden = name !== tab();
    document.querySelector(`nav a[data-tab=${name}]`).classList.toggle("active", name === tab());
  }
}

async function refresh() {
  const error = document.getElementById("error"), form = document.getElementById("key-form");
  if (document.body.dataset.needsKey === "true" && !localStorage.getItem(KEY_STORE)) {
    form.hidden = false;  // asked before any request: a refused one would be a console error
    return;
  }
  try {
    const shown = [showClock(), showTradingState()];
    if (tab() === "trading") shown.push(showAccount(), showEquity(), showTrades(), showReconciliation());
    else shown.push(showAgent().then(showQTable), showRewards(), showAB());
    await Promise.all(shown);
    form.hidden = error.hidden = true;
    document.body.dataset.loaded = "true";
  } catch (e) {
    if (e instanceof NeedsKey) {
      form.hidden = false;
      document.getElementById("key-error").textContent = localStorage.getItem(KEY_STORE) ? e.message : "";
    } else {
      error.hidden = false;
      error.textContent = e.message;
    }
  }
}

async function poll() {
  await refresh();
  setTimeout(poll, POLL_MS);
}

document.getElementById("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  localStorage.setItem(KEY_STORE, document.getElementById("key").value.trim());
  refresh();
});
window.addEventListener("hashchange", () => { showTab(); refresh(); });
showTab();
poll();
