/**
 * The status page (DESIGN §9): one server-rendered HTML document with a small inline script. The parts that change
 * while a run goes (counts, figures, chart, tables) are drawn by `views()`, a self-contained function the server
 * calls to render the page and whose source the page embeds, so the first paint and every live update are drawn
 * by the same code, with no build step, no CDN, and nothing fetched but the page's own API.
 */
import type { BatchView, ResultLine, RunLine, StatusView } from "./core/report/report.ts"
import type { State } from "./core/ledger/states.ts"
import type { AttemptRow } from "./core/ledger/types.ts"

/** A run as the list at the top of the page shows it. */
export interface RunRow extends RunLine {
  rate_per_s: number
  eta_s: number | null
  spend_usd: number | null
}

/** Completions per slot of time, oldest first: the chart. */
export interface Chart {
  slot_ms: number
  points: { at: number; completed: number; failed: number }[]
}

/** What `GET /api/runs/:id` returns: the status view of `spool status --json`, with its chart. */
export interface RunDetail extends StatusView {
  chart: Chart
}

/** An item as `GET /api/runs/:id/items` returns it: its result line, with every attempt. */
export interface ItemView extends ResultLine {
  item_id: number
  /** Every attempt, oldest first; times as ISO strings; `note` says why one did not count (report.ts `attemptNote`). */
  history: (Omit<AttemptRow, "started_at" | "ended_at"> & {
    started_at: string
    ended_at: string | null
    note: string | null
  })[]
}

type Views = ReturnType<typeof views>

/**
 * The page's renderers. Runs on the server and, embedded as source text, in the browser: it must use nothing
 * from outside its own body (no imports, no module-level names).
 */
export function views() {
  const esc = (s: unknown): string =>
    String(s ?? "").replace(
      /[&<>"']/g,
      (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c] as string,
    )
  const num = (n: number): string => n.toLocaleString("en-US")
  const dur = (s: number | null): string => {
    if (s === null) return "—"
    if (s < 60) return `${s}s`
    const m = Math.floor(s / 60)
    return m < 60 ? `${m}m ${s % 60}s` : `${Math.floor(m / 60)}h ${m % 60}m`
  }
  const usd = (x: number | null): string =>
    x === null
      ? "unknown"
      : `$${x.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: x < 1 ? 4 : 2 })}`
  const time = (iso: string | null): string => (iso ? iso.replace("T", " ").slice(0, 19) : "")
  // an SVG, not styled boxes: the page's CSP refuses style attributes, but not SVG geometry
  const bar = (completed: number, failed: number, total: number): string => {
    const pc = total ? (100 * completed) / total : 0
    const pf = total ? (100 * failed) / total : 0
    return `<svg class="bar" viewBox="0 0 100 1" preserveAspectRatio="none" role="img" aria-label="${num(completed)} completed, ${num(failed)} failed of ${num(total)}"><title>${num(completed)} completed, ${num(failed)} failed of ${num(total)}</title><rect class="ok" width="${pc.toFixed(2)}" height="1"/><rect class="bad" x="${pc.toFixed(2)}" width="${pf.toFixed(2)}" height="1"/></svg>`
  }
  const ORDER = [
    "completed",
    "failed",
    "needs_review",
    "pending",
    "running",
    "retry_wait",
    "queued",
    "submitted",
  ]
  const FINISHED = ["completed", "completed_with_failures", "cancelled"]

  return {
    runs(list: RunRow[], selected: number | null): string {
      if (!list.length)
        return `<tr><td colspan="6" class="muted">No runs yet: start one with <code>spool run job.toml</code>.</td></tr>`
      return list
        .map(
          (r) =>
            `<tr class="${r.id === selected ? "sel" : ""}" data-run="${r.id}"><td><a href="?run=${r.id}">${esc(r.name)}</a> <span class="muted">#${r.id}</span></td><td><span class="st st-${esc(r.state)}">${esc(r.state)}</span></td><td class="grow"><div class="prog">${bar(r.completed, r.failed, r.total)}<span class="muted">${num(r.completed + r.failed)} / ${num(r.total)}</span></div></td><td>${r.rate_per_s}/s</td><td>${dur(r.eta_s)}</td><td>${usd(r.spend_usd)}</td></tr>`,
        )
        .join("")
    },

    head(v: RunDetail): string {
      const why = v.reason ? ` <span class="muted">— ${esc(v.reason)}</span>` : ""
      return `<h2>${esc(v.name)} <span class="muted">#${v.id}</span> <span class="st st-${esc(v.state)}" id="run-state">${esc(v.state)}</span>${why}</h2>${bar(v.counts.completed, v.counts.failed + v.counts.needs_review, v.total)}`
    },

    controls(v: RunDetail): string {
      const done = FINISHED.includes(v.state)
      const b = (action: string, label: string, enabled: boolean, state = "") =>
        `<button type="button" data-action="${action}"${state ? ` data-state="${state}"` : ""}${enabled ? "" : " disabled"}>${label}</button>`
      return [
        b("pause", "Pause", v.state === "running"),
        b("resume", "Resume", v.state === "paused"),
        b("cancel", "Cancel", !done && v.state !== "cancelling"),
        b(
          "retry",
          `Retry failed (${num(v.counts.failed)})`,
          v.counts.failed > 0 && v.state !== "cancelled",
          "failed",
        ),
        b(
          "retry",
          `Retry needs_review (${num(v.counts.needs_review)})`,
          v.counts.needs_review > 0 && v.state !== "cancelled",
          "needs_review",
        ),
      ].join("")
    },

    counts(v: RunDetail): string {
      return ORDER.map(
        (s) =>
          `<div class="tile${v.counts[s as State] ? "" : " zero"}" data-state="${s}"><b>${num(v.counts[s as State])}</b><span>${s}</span></div>`,
      ).join("")
    },

    figures(v: RunDetail): string {
      const rest = v.spend.remaining_usd ? ` · ~${usd(v.spend.remaining_usd)} for the rest` : ""
      const spend = v.spend.usd === null ? "unknown (no price for this model)" : `${usd(v.spend.usd)}${rest}`
      const rows: [string, string][] = [
        ["throughput", `${v.rate_per_s}/s${v.state === "running" ? " (last minute)" : ""}`],
        ["ETA", dur(v.eta_s)],
        ["elapsed", dur(v.elapsed_s)],
        ["items", num(v.total)],
        ["attempts", num(v.attempts)],
        ["tokens", `${num(v.usage.input_tokens)} in · ${num(v.usage.output_tokens)} out`],
        ["spend", spend],
      ]
      return rows.map(([k, x]) => `<dt>${k}</dt><dd data-k="${k}">${esc(x)}</dd>`).join("")
    },

    chart(c: Chart): string {
      const W = 720
      const H = 120
      // at least this many slots wide: a short run's few bars stay bars, drawn from the left as time goes
      const MIN_SLOTS = 60
      const pts = c.points
      if (!pts.length) return `<p class="muted">No item has finished yet.</p>`
      const first = pts[0]?.at ?? 0
      const last = pts[pts.length - 1]?.at ?? first
      const slots = Math.max(MIN_SLOTS, Math.round((last - first) / c.slot_ms) + 1)
      const max = Math.max(1, ...pts.map((p) => p.completed + p.failed))
      const w = W / slots
      const clock = (ms: number) => new Date(ms).toISOString().slice(11, 19)
      const bars = pts
        .map((p) => {
          const x = (((p.at - first) / c.slot_ms) * w).toFixed(2)
          const width = Math.max(0.5, w * 0.85).toFixed(2)
          const hc = (p.completed / max) * (H - 4)
          const hf = (p.failed / max) * (H - 4)
          return `<g><title>${clock(p.at)}: ${num(p.completed)} completed, ${num(p.failed)} failed</title><rect class="ok" x="${x}" y="${(H - hc).toFixed(2)}" width="${width}" height="${hc.toFixed(2)}"/><rect class="bad" x="${x}" y="${(H - hc - hf).toFixed(2)}" width="${width}" height="${hf.toFixed(2)}"/></g>`
        })
        .join("")
      const per = c.slot_ms >= 60_000 ? `${c.slot_ms / 60_000} min` : `${c.slot_ms / 1000} s`
      const failed = pts.some((p) => p.failed) ? `<i class="key bad"></i>failed or needs_review` : ""
      return `<div class="axis"><span>highest: ${num(max)} per ${per}</span><span><i class="key ok"></i>completed${failed}</span></div><svg viewBox="0 0 ${W} ${H}" preserveAspectRatio="none" width="100%" height="${H}" role="img" aria-label="items finished per ${per}">${bars}</svg><div class="axis"><span>from ${clock(first)} UTC</span><span>a bar: ${per}</span></div>`
    },

    errors(list: StatusView["errors"]): string {
      if (!list.length) return `<tr><td colspan="3" class="muted">No errors.</td></tr>`
      return list
        .map(
          (e) =>
            `<tr><td><code>${esc(e.class)}</code></td><td>${num(e.count)}</td><td>${esc(e.id)}: ${esc(e.example)}</td></tr>`,
        )
        .join("")
    },

    items(list: ItemView[]): string {
      if (!list.length) return `<tr><td colspan="5" class="muted">No failed or needs_review items.</td></tr>`
      return list
        .map((i) => {
          const out =
            i.output === null || i.output === undefined
              ? ""
              : typeof i.output === "string"
                ? i.output
                : JSON.stringify(i.output)
          const err = i.error ? `${i.error.class ?? ""}: ${i.error.message}` : ""
          return `<tr><td>${esc(i.id)}</td><td><span class="st st-${esc(i.state)}">${esc(i.state)}</span></td><td>${i.attempts}</td><td class="clip">${esc(err)}</td><td class="clip">${esc(out.slice(0, 300))}</td></tr>`
        })
        .join("")
    },

    batches(list: BatchView[]): string {
      if (!list.length) return `<tr><td colspan="6" class="muted">No batches.</td></tr>`
      return list
        .slice(-50)
        .reverse()
        .map(
          (b) =>
            `<tr><td>#${b.id} <code>${esc(b.provider_id ?? b.tag)}</code></td><td>${esc(b.phase)}${b.outcome ? ` (${esc(b.outcome)})` : ""}</td><td>${esc(b.status ?? "")}</td><td>${b.done === null ? "" : `${num(b.done)} / `}${num(b.items)}${b.failed ? `, ${num(b.failed)} failed` : ""}</td><td>${time(b.created_at)}</td><td class="clip">${esc(b.error ?? "")}</td></tr>`,
        )
        .join("")
    },

    malformed(m: StatusView["malformed"]): string {
      if (!m.count) return `<li class="muted">No malformed input lines.</li>`
      return (
        `<li>${num(m.count)} line(s) skipped${m.duplicates ? `, ${num(m.duplicates)} duplicate id(s)` : ""}</li>` +
        m.sample.map((p) => `<li><code>${esc(p.file)}:${p.line}</code> ${esc(p.reason)}</li>`).join("")
      )
    },

    recent(
      list: { key: string; n: number; ended_at: number; error_class: string; error: string | null }[],
    ): string {
      if (!list.length) return `<li class="muted none">No failed attempts.</li>`
      return list
        .map(
          (e) =>
            `<li><span class="muted">${new Date(e.ended_at).toISOString().slice(11, 19)}</span> <code>${esc(e.error_class)}</code> ${esc(e.key)} (attempt ${e.n}): ${esc(e.error ?? "")}</li>`,
        )
        .join("")
    },
  }
}

const STYLE = `
:root{--ok:#2e9d57;--bad:#d0453a;--mut:#6b7280;--line:#e5e7eb;--bg:#fff;--fg:#111827;--link:#1d4ed8;font:14px/1.45 system-ui,sans-serif}
@media (prefers-color-scheme:dark){:root{--line:#374151;--bg:#111827;--fg:#e5e7eb;--mut:#9ca3af;--link:#93c5fd}}
a{color:var(--link)}.wide{overflow-x:auto}
body{margin:0;background:var(--bg);color:var(--fg)}header{padding:10px 20px;border-bottom:1px solid var(--line);display:flex;gap:12px;align-items:baseline}
header h1{font-size:18px;margin:0}main{padding:12px 20px;max-width:1200px}h2{font-size:17px;margin:18px 0 8px}h3{font-size:14px;margin:18px 0 6px}
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:4px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{font-weight:600;color:var(--mut)}tr.sel{background:rgba(46,157,87,.08)}td.grow{width:40%}td.clip{max-width:380px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.bar{display:block;width:100%;height:8px;background:var(--line);border-radius:4px;overflow:hidden;margin:4px 0}
.prog{display:flex;align-items:center;gap:8px}.prog .bar{flex:1;min-width:60px;margin:0}.prog span{white-space:nowrap}
.ok{background:var(--ok);fill:var(--ok)}.bad{background:var(--bad);fill:var(--bad)}.muted{color:var(--mut)}
.tiles{display:flex;flex-wrap:wrap;gap:8px}.tile{border:1px solid var(--line);border-radius:6px;padding:6px 10px;min-width:92px}.tile b{display:block;font-size:18px}.tile span{color:var(--mut);font-size:12px}.tile.zero{opacity:.55}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:10px 0}dt{color:var(--mut)}dd{margin:0}
.st{font-size:12px;padding:1px 6px;border-radius:9px;border:1px solid var(--line)}.st-running,.st-completed{color:var(--ok)}.st-paused,.st-cancelling{color:#b7791f}.st-failed,.st-cancelled,.st-completed_with_failures,.st-needs_review{color:var(--bad)}
button{margin:0 6px 6px 0;padding:4px 10px;border:1px solid var(--line);border-radius:5px;background:transparent;color:inherit;cursor:pointer}button:disabled{opacity:.4;cursor:default}
#message{min-height:1.3em;color:var(--mut);margin-bottom:6px}#controls{margin-top:8px}
#chart svg{display:block;border-bottom:1px solid var(--line)}.axis{display:flex;justify-content:space-between;font-size:12px;color:var(--mut);margin:2px 0}
.key{display:inline-block;width:9px;height:9px;border-radius:2px;margin:0 4px 0 8px}ul{padding-left:18px;margin:4px 0}
.live{font-size:12px;color:var(--mut)}.live.on::before{content:"● ";color:var(--ok)}
@media (max-width:700px){td.grow{width:auto}td.clip{max-width:160px}}
`

/** The client side: live updates from the events stream, and the control buttons. */
function script(viewsSource: string): string {
  return `
const V = (${viewsSource})();
const $ = (id) => document.getElementById(id);
// what each part was last drawn from: innerHTML reads back normalized (disabled="", quotes), never equal to it
const drawn = {};
const put = (id, html) => {
  const el = $(id);
  if (el && drawn[id] !== html) { drawn[id] = html; el.innerHTML = html; }
};
const runId = document.body.dataset.run ? Number(document.body.dataset.run) : null;
let failing = "";
async function loadItems() {
  const get = (s) => fetch("api/runs/" + runId + "/items?limit=25&state=" + s).then((r) => r.json());
  try {
    const [f, n] = await Promise.all([get("failed"), get("needs_review")]);
    put("items", V.items([...(f.items || []), ...(n.items || [])]));
  } catch { failing = ""; } // drawn again with the next change
}
// errors from where the list ends (the page's own, then the last one streamed): none missed, none twice
let since = document.body.dataset.since || "";
function connect() {
  const from = since ? "&since=" + since : "";
  const es = new EventSource(runId ? "api/runs/" + runId + "/events?runs=1" + from : "api/events");
  es.onopen = () => $("live").classList.add("on");
  // reconnected here rather than by the browser, which would ask again from the first address's since
  es.onerror = () => { $("live").classList.remove("on"); es.close(); setTimeout(connect, 2000); };
  es.addEventListener("runs", (e) => put("runs", V.runs(JSON.parse(e.data), runId)));
  es.addEventListener("run", (e) => {
    const v = JSON.parse(e.data);
    put("head", V.head(v)); put("controls", V.controls(v)); put("counts", V.counts(v));
    put("figures", V.figures(v)); put("chart", V.chart(v.chart)); put("errors", V.errors(v.errors));
    put("batches", V.batches(v.batches)); put("malformed", V.malformed(v.malformed));
    const key = v.counts.failed + "/" + v.counts.needs_review;
    if (key !== failing) { failing = key; loadItems(); }
  });
  es.addEventListener("errors", (e) => {
    const fresh = JSON.parse(e.data);
    if (fresh.length) since = String(fresh[fresh.length - 1].ended_at + 1);
    const list = $("recent");
    for (const none of list.querySelectorAll(".none")) none.remove();
    list.insertAdjacentHTML("afterbegin", V.recent(fresh.reverse()));
    while (list.children.length > 20) list.lastElementChild.remove();
  });
}
document.addEventListener("click", async (e) => {
  const b = e.target.closest("button[data-action]");
  if (!b || !runId) return;
  // the one control that cannot be taken back asks first
  if (b.dataset.action === "cancel" && !confirm("Cancel this run? Its live batches are cancelled at the provider; what they finished is kept.")) return;
  b.disabled = true;
  const body = b.dataset.state ? { state: b.dataset.state } : {};
  try {
    const r = await fetch("api/runs/" + runId + "/" + b.dataset.action, {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
    });
    const j = await r.json().catch(() => ({ error: r.status + " " + r.statusText }));
    $("message").textContent = j.message || j.error || "";
    // refused: the run did not change, so no update redraws the button
    if (!r.ok) b.disabled = false;
  } catch (err) { $("message").textContent = String(err); b.disabled = false; }
});
if (runId) failing = document.body.dataset.failing || "";
connect();
`
}

/** The whole page: every run, and the selected one (null: none yet) in detail. */
export function render(o: {
  runs: RunRow[]
  run: RunDetail | null
  items: ItemView[]
  recent: Parameters<Views["recent"]>[0]
  nonce: string
  version: string
}): string {
  const V = views()
  const v = o.run
  const detail = v
    ? `
<section id="run">
  <div id="head">${V.head(v)}</div>
  <div id="controls">${V.controls(v)}</div><div id="message" role="status"></div>
  <div class="tiles" id="counts">${V.counts(v)}</div>
  <dl id="figures">${V.figures(v)}</dl>
  <h3>Items finished over time</h3><div id="chart">${V.chart(v.chart)}</div>
  <h3>Error classes</h3><div class="wide"><table><thead><tr><th>class</th><th>attempts</th><th>example</th></tr></thead><tbody id="errors">${V.errors(v.errors)}</tbody></table></div>
  <h3>Latest errors</h3><ul id="recent">${V.recent(o.recent)}</ul>
  <h3>Failed and needs_review items</h3><div class="wide"><table><thead><tr><th>id</th><th>state</th><th>attempts</th><th>last error</th><th>output</th></tr></thead><tbody id="items">${V.items(o.items)}</tbody></table></div>
  <h3>Batches</h3><div class="wide"><table><thead><tr><th>batch</th><th>phase</th><th>provider status</th><th>requests</th><th>created</th><th>error</th></tr></thead><tbody id="batches">${V.batches(v.batches)}</tbody></table></div>
  <h3>Malformed input lines</h3><ul id="malformed">${V.malformed(v.malformed)}</ul>
</section>`
    : ""
  const failing = v ? `${v.counts.failed}/${v.counts.needs_review}` : ""
  // the live errors start just after the newest one listed (or now, when none is)
  const since = v
    ? String(o.recent.length ? Math.max(...o.recent.map((e) => e.ended_at)) + 1 : Date.now())
    : ""
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${v ? `${escapeHtml(v.name)} · ` : ""}spool</title><link rel="icon" href="data:,"><style nonce="${o.nonce}">${STYLE}</style></head>
<body data-run="${v ? v.id : ""}" data-failing="${failing}" data-since="${since}">
<header><h1>spool</h1><span class="muted">${escapeHtml(o.version)}</span><span id="live" class="live">live</span></header>
<main>
<div class="wide"><table><thead><tr><th>run</th><th>state</th><th>progress</th><th>rate</th><th>ETA</th><th>spend</th></tr></thead><tbody id="runs">${V.runs(o.runs, v ? v.id : null)}</tbody></table></div>
${detail}
</main>
<script nonce="${o.nonce}">${script(views.toString())}</script>
</body></html>`
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)
}
