/**
 * The page's renderers. `views()` runs on the server (the first paint) and, embedded as source text, in the browser
 * (every update after it), so both are drawn by the same code: it must use nothing from outside its own body (no
 * imports, no module-level names). Times are drawn in the zone of whoever runs it, and say which zone that is.
 */
import type { BatchView, StatusView } from "../core/report/report.ts"
import type { State } from "../core/ledger/states.ts"
import type { Chart, ItemDetail, ItemView, JobView, RunDetail, RunRow, StepCell } from "./types.ts"

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
  /** A count and its noun: `1 hit`, `1,200 hits`, `2 misses`. */
  const count = (n: number, noun: string): string =>
    `${num(n)} ${n === 1 ? noun : noun.endsWith("s") ? `${noun}es` : `${noun}s`}`
  /** Tokens as the page shows them: `1,200 in · 40 out (1,000 cached, 200 written)`: the prompt cache's when it was used. */
  const tokens = (input: number, output: number, cached: number, written: number): string =>
    `${num(input)} in · ${num(output)} out${written ? ` (${num(cached)} cached, ${num(written)} written)` : cached ? ` (${num(cached)} cached)` : ""}`
  /** Dollars, a loss with its sign first (-$0.0023). */
  const signed = (x: number): string => (x < 0 ? `-${usd(-x)}` : usd(x))
  /**
   * The provider's prompt cache as a figure, once it read or wrote: `2,997,000 read · 3,000 written · saved $8.09 (89%
   * of input)`, the share rounded down (never more than was saved); else null.
   */
  const caching = (
    p: { read_tokens: number; write_tokens: number; saved_usd: number | null; saved_share?: number | null },
    unpriced: string,
  ): string | null => {
    if (p.read_tokens + p.write_tokens === 0) return null
    const share = p.saved_share == null ? "" : ` (${Math.trunc(p.saved_share * 100)}% of input)`
    const loss =
      p.saved_usd !== null && p.saved_usd < 0 ? ": the cache writes cost more than its reads saved" : ""
    const saved = p.saved_usd === null ? unpriced : `${signed(p.saved_usd)}${share}${loss}`
    return `${num(p.read_tokens)} read · ${num(p.write_tokens)} written · saved ${saved}`
  }
  /** The priming calls as a figure, once one was sent: `3 calls (1 failed) · $0.0123`; else null. */
  const priming = (
    p: { calls: number; failed: number; cost_usd: number | null },
    unpriced: string,
  ): string | null =>
    p.calls
      ? `${count(p.calls, "call")}${p.failed ? ` (${num(p.failed)} failed)` : ""} · ${p.cost_usd === null ? `cost ${unpriced}` : usd(p.cost_usd)}`
      : null
  /** A state as words: `completed with failures`, not `completed_with_failures`. */
  const word = (s: string): string => s.replace(/_/g, " ")
  const chip = (s: string, id = ""): string =>
    `<span class="st st-${esc(s)}"${id ? ` id="${id}"` : ""}>${esc(word(s))}</span>`
  const pad = (n: number): string => String(n).padStart(2, "0")
  /** A time of day here (where this code runs); with the date when `dated`, and tenths of a second when `tenths`. */
  const clock = (ms: number, dated = false, tenths = false): string => {
    const d = new Date(ms)
    const day = dated ? `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` : ""
    const tenth = tenths ? `.${Math.floor(d.getMilliseconds() / 100)}` : ""
    return `${day}${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}${tenth}`
  }
  /** This zone as an offset from UTC at `ms` ("UTC+1", "UTC+5:30", "UTC"), and its name where it has one. */
  const zone = (ms: number): string => {
    const off = -new Date(ms).getTimezoneOffset()
    const a = Math.abs(off)
    const utc = off
      ? `UTC${off < 0 ? "-" : "+"}${Math.floor(a / 60)}${a % 60 ? `:${pad(a % 60)}` : ""}`
      : "UTC"
    const name = Intl.DateTimeFormat().resolvedOptions().timeZone
    return name && name !== "UTC" && name !== "Etc/UTC" ? `${utc} (${name})` : utc
  }
  /** A time as the page shows it: here, and marked so that the browser redraws a server-drawn one in its own zone. */
  const at = (ms: number | null, dated = false, tenths = false): string =>
    ms === null
      ? ""
      : `<time data-t="${ms}"${dated ? " data-dated" : ""}${tenths ? " data-tenths" : ""}>${clock(ms, dated, tenths)}</time>`
  const iso = (s: string | null): number | null => (s ? Date.parse(s) : null)
  /** JSON pretty-printed, a string that holds JSON too; any other string as it is. */
  const pretty = (x: unknown): string => {
    if (typeof x !== "string") return JSON.stringify(x, null, 2)
    try {
      const parsed: unknown = JSON.parse(x)
      return parsed !== null && typeof parsed === "object" ? JSON.stringify(parsed, null, 2) : x
    } catch {
      return x
    }
  }
  const oneLine = (x: unknown): string =>
    x === null || x === undefined ? "" : typeof x === "string" ? x : JSON.stringify(x)
  // an SVG, not styled boxes: the page's CSP refuses style attributes, but not SVG geometry
  // a pipeline step's skipped rows are done too: a third, muted part
  const bar = (completed: number, failed: number, total: number, skipped = 0): string => {
    const pc = total ? (100 * completed) / total : 0
    const pf = total ? (100 * failed) / total : 0
    const ps = total ? (100 * skipped) / total : 0
    const said = `${num(completed)} completed, ${num(failed)} failed${skipped ? `, ${num(skipped)} skipped` : ""} of ${num(total)}`
    const rest = skipped
      ? `<rect class="skip" x="${(pc + pf).toFixed(2)}" width="${ps.toFixed(2)}" height="1"/>`
      : ""
    return `<svg class="bar" viewBox="0 0 100 1" preserveAspectRatio="none" role="img" aria-label="${said}"><title>${said}</title><rect class="ok" width="${pc.toFixed(2)}" height="1"/><rect class="bad" x="${pc.toFixed(2)}" width="${pf.toFixed(2)}" height="1"/>${rest}</svg>`
  }
  const ORDER = [
    "completed",
    "failed",
    "needs_review",
    "rejected",
    "pending",
    "running",
    "retry_wait",
    "queued",
    "submitted",
  ]
  const FINISHED = ["completed", "completed_with_failures", "cancelled"]
  /** A step's node in the pipeline graph counts these; "in flight" is every state an item is still called in. */
  const NODE: [string, string[]][] = [
    ["completed", ["completed"]],
    ["skipped", ["skipped"]],
    ["failed", ["failed"]],
    ["needs_review", ["needs_review"]],
    ["rejected", ["rejected"]],
    ["in_flight", ["pending", "running", "retry_wait", "queued", "submitted"]],
  ]
  /** A step's cell of a row: its state, and its output or error on one line (not reached: no item yet). */
  const cell = (c: StepCell): string => {
    if (c.state === null)
      return `<td class="cell" data-step="${esc(c.step)}"><span class="muted">not reached</span></td>`
    const text =
      c.output !== null && c.output !== undefined ? oneLine(c.output) : c.error ? c.error.message : ""
    return `<td class="cell" data-step="${esc(c.step)}">${chip(c.state)}<div class="out">${esc(text.slice(0, 300))}</div></td>`
  }
  /** A run's row of the runs list: a pipeline's says its steps and the rows waiting for review; a step's is indented. */
  const runRow = (r: RunRow, selected: number | null): string => {
    const p = r.pipeline
    const progress = p
      ? `<span class="muted">pipeline of ${num(p.steps.length)} step(s): ${esc(p.steps.join(", "))} · ${num(r.total)} rows${p.review ? ` · <b>${num(p.review)}</b> wait for review` : ""}</span>`
      : `<div class="prog">${bar(r.completed, r.failed, r.total, r.skipped)}<span class="muted">${num(r.completed + r.failed + r.skipped)} / ${num(r.total)}</span></div>`
    const name = `${r.parent !== null ? `<span class="muted">↳</span> ` : ""}<a href="?run=${r.id}">${esc(r.name)}</a> <span class="muted">#${r.id}</span>${r.step !== null ? ` <span class="tag">step</span>` : ""}`
    const resume = r.resume
      ? `<div class="resume">go on with <code class="cmd">${esc(r.resume)}</code></div>`
      : ""
    const rate = r.state === "interrupted" || p ? "—" : `${r.rate_per_s}/s`
    return `<tr class="${r.id === selected ? "sel" : ""}${r.parent !== null ? " step" : ""}" data-run="${r.id}"${r.parent !== null ? ` data-parent="${r.parent}"` : ""}><td>${name}${resume}</td><td>${chip(r.state)}</td><td class="grow">${progress}</td><td>${rate}</td><td>${p ? "—" : dur(r.eta_s)}</td><td>${usd(r.spend_usd)}</td></tr>`
  }
  const resumeWith = (cmd: string): string =>
    `<p class="alert" id="interrupted"><b>Interrupted:</b> no spool process is working on this run (stopped by Ctrl+C, killed, or its machine is gone). Go on with <code class="cmd">${esc(cmd)}</code></p>`

  /**
   * A pipeline's steps as a graph (left to right: a step's column is one past its furthest need's), an arrow from
   * each need to its step, each node linking to its step's run and counting its rows by state.
   */
  const graph = (p: NonNullable<RunDetail["pipeline"]>): string => {
    const W = 190
    const LINE = 16
    const H = 44 + (NODE.length + 1) * LINE
    const GX = 56
    const GY = 18
    const depth = new Map<string, number>()
    for (const s of p.steps) depth.set(s.name, Math.max(-1, ...s.needs.map((n) => depth.get(n) ?? 0)) + 1)
    const rows = new Map<number, number>()
    const place = new Map<string, { x: number; y: number }>()
    for (const s of p.steps) {
      const col = depth.get(s.name) ?? 0
      const row = rows.get(col) ?? 0
      rows.set(col, row + 1)
      place.set(s.name, { x: 1 + col * (W + GX), y: 1 + row * (H + GY) })
    }
    const width = Math.max(W, ...[...place.values()].map((q) => q.x + W)) + 2
    const height = Math.max(H, ...[...place.values()].map((q) => q.y + H)) + 2
    const arrows = p.steps
      .flatMap((s) =>
        s.needs.flatMap((n) => {
          const a = place.get(n)
          const b = place.get(s.name)
          if (!a || !b) return []
          const [x1, y1, x2, y2] = [a.x + W, a.y + H / 2, b.x - 2, b.y + H / 2]
          const mid = (x1 + x2) / 2
          return [
            `<path class="edge" data-from="${esc(n)}" data-to="${esc(s.name)}" d="M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}" marker-end="url(#arrow)"/>`,
          ]
        }),
      )
      .join("")
    const nodes = p.steps
      .map((s) => {
        const q = place.get(s.name)!
        const n = (states: string[]) => states.reduce((t, st) => t + (s.counts[st as State] ?? 0), 0)
        const lines: [string, string, number][] = [
          ...NODE.map(([k, states]) => [k, word(k), n(states)] as [string, string, number]),
          ["not_reached", "not reached", s.not_reached],
        ]
        const said = lines.map(([, label, x]) => `${label} ${num(x)}`).join(", ")
        const counts = lines
          .map(
            ([k, label, x], i) =>
              `<text class="k${x ? "" : " zero"}" x="${q.x + 10}" y="${q.y + 52 + i * LINE}">${label}</text><text class="n${x ? "" : " zero"}" data-k="${k}" x="${q.x + W - 10}" y="${q.y + 52 + i * LINE}">${num(x)}</text>`,
          )
          .join("")
        const when = s.when ? ` when ${s.when}` : ""
        return `<a class="node" href="?run=${s.run}" data-step="${esc(s.name)}" data-run="${s.run}"><title>${esc(s.run_name)} (${s.kind}${esc(when)}): ${said}</title><rect class="box st-${esc(s.state)}" x="${q.x}" y="${q.y}" width="${W}" height="${H}" rx="7"/><text class="name" x="${q.x + 10}" y="${q.y + 19}">${esc(s.name)}</text><text class="kind" x="${q.x + 10}" y="${q.y + 34}">${s.kind} · ${esc(word(s.state))}${s.spend_usd ? ` · ${usd(s.spend_usd)}` : ""}</text>${counts}</a>`
      })
      .join("")
    const waiting = p.steps
      .filter((s) => s.counts.needs_review > 0)
      .map(
        (s) =>
          `<a href="?run=${s.run}" data-step="${esc(s.name)}">${num(s.counts.needs_review)} row(s) at ${esc(s.name)}</a>`,
      )
    const review = waiting.length
      ? `<p class="alert" id="waiting"><b>Waiting for review:</b> ${waiting.join(" · ")} (open the step to approve, edit or reject them)</p>`
      : ""
    return `<div class="graph"><svg viewBox="0 0 ${width} ${height}" width="${width}" height="${height}" role="img" aria-label="the pipeline's steps"><defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto"><path class="head" d="M0,0 L10,5 L0,10 z"/></marker></defs>${arrows}${nodes}</svg>${review}</div>`
  }

  /** A pipeline run's row opened: its input row, and its item at every step side by side, each linking to it. */
  const row = (
    d: Pick<ItemDetail, "id" | "source" | "input">,
    steps: NonNullable<ItemDetail["steps"]>,
  ): string => {
    const columns = steps
      .map((s) => {
        const i = s.item
        const head = `<h4><a href="?run=${s.run}${i ? `#item=${i.item_id}` : ""}">${esc(s.name)}</a> <span class="muted">${s.kind}</span></h4>`
        if (!i)
          return `<div class="step" data-step="${esc(s.name)}">${head}<p class="muted">not reached yet</p></div>`
        const out =
          i.output === null || i.output === undefined
            ? ""
            : `<pre class="step-output">${esc(pretty(i.output))}</pre>`
        const err = i.error
          ? `<p class="step-error"><code>${esc(i.error.class ?? "")}</code> ${esc(i.error.message)}</p>`
          : ""
        const waits =
          i.state === "needs_review"
            ? `<p><a class="button" href="?run=${s.run}#item=${i.item_id}">Review it at ${esc(s.name)}</a></p>`
            : ""
        const cost = i.cost_usd ? ` · ${usd(i.cost_usd)}` : ""
        return `<div class="step" data-step="${esc(s.name)}">${head}<p>${chip(i.state)} <span class="muted">${i.attempts} attempt(s)${cost}</span></p>${out}${err}${waits}</div>`
      })
      .join("")
    return `<div class="item-head"><h3>Row <code>${esc(d.id)}</code></h3><a href="#" id="close-item">close</a></div><p class="muted">${esc(d.source.file)}, row ${d.source.row}</p><h4>Input row</h4><pre id="item-input">${esc(pretty(d.input))}</pre><h4>Its steps</h4><div class="steps" id="row-steps">${columns}</div>`
  }

  return {
    esc,
    graph,
    row,
    word,
    clock,
    zone,
    pretty,

    runs(list: RunRow[], selected: number | null): string {
      if (!list.length)
        return `<tr><td colspan="6" class="muted">No runs yet: start one with <code>spool run job.toml</code>.</td></tr>`
      // a pipeline's step runs right under it, in the order they were made
      const ids = new Set(list.map((r) => r.id))
      return list
        .filter((r) => r.parent === null || !ids.has(r.parent))
        .flatMap((r) => [r, ...list.filter((s) => s.parent === r.id)])
        .map((r) => runRow(r, selected))
        .join("")
    },

    head(v: RunDetail): string {
      const why = v.reason ? ` <span class="muted">— ${esc(v.reason)}</span>` : ""
      const stopped = v.state === "interrupted" ? resumeWith(v.resume) : ""
      const title = `<h2>${esc(v.name)} <span class="muted">#${v.id}</span> ${chip(v.state, "run-state")}${why}</h2>${stopped}`
      if (v.pipeline)
        return `${title}<p class="muted" id="pipeline-of">a pipeline of ${num(v.pipeline.steps.length)} step(s) over ${num(v.pipeline.rows)} rows: each step is a run of its own (below), and each row's items at every step are side by side in its items</p>`
      const s = v.step
      const of = s
        ? `<p class="muted" id="step-of">step <b>${esc(s.name)}</b> (${s.kind === "review" ? "review: rows wait here for a person" : "model"}) of the pipeline <a href="?run=${s.parent}">${esc(s.parent_name)}</a>${s.needs.length ? ` · needs ${esc(s.needs.join(", "))}` : ""}${s.when ? ` · when <code>${esc(s.when)}</code>` : ""}</p>`
        : ""
      return `${title}${of}${bar(v.counts.completed, v.counts.failed + v.counts.needs_review + v.counts.rejected, v.total, v.counts.skipped)}`
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
          v.counts.failed > 0 && v.state !== "cancelling",
          "failed",
        ),
        b(
          "retry",
          `Retry needs review (${num(v.counts.needs_review)})`,
          v.counts.needs_review > 0 && v.state !== "cancelling",
          "needs_review",
        ),
        `<a class="button" id="download" href="api/runs/${v.id}/results" download="${esc(v.name)}-${v.id}.jsonl">Download results (JSONL)</a>`,
      ].join("")
    },

    counts(v: RunDetail): string {
      if (v.pipeline) return graph(v.pipeline)
      // a step's rows can be skipped (its when false, or a step it needs not completed); no other run's can
      return (v.step || v.counts.skipped ? [...ORDER, "skipped"] : ORDER)
        .map(
          (s) =>
            `<button type="button" class="tile${v.counts[s as State] ? "" : " zero"}" data-state="${s}" title="show the ${word(s)} items"><b>${num(v.counts[s as State])}</b><span>${word(s)}</span></button>`,
        )
        .join("")
    },

    figures(v: RunDetail): string {
      if (v.pipeline) {
        const p = v.pipeline
        const spend = p.spend_usd === null ? "unknown (a step's model has no price)" : usd(p.spend_usd)
        const facts: [string, string][] = [
          ["rows", num(p.rows)],
          [
            "steps",
            p.steps.map((s) => `${s.name}${s.needs.length ? ` ← ${s.needs.join(", ")}` : ""}`).join("\n"),
          ],
          ["elapsed", dur(v.elapsed_s)],
          ["spend", spend],
        ]
        // the steps' prompt cache and priming together, once a step used them
        const pc = p.prompt_cache && caching(p.prompt_cache, "unknown (a step's model has no price)")
        if (pc) facts.push(["prompt cache", pc])
        const pr = p.priming && priming(p.priming, "unknown (a step's model has no price)")
        if (pr) facts.push(["priming", pr])
        return facts.map(([k, x]) => `<dt>${k}</dt><dd data-k="${k}">${esc(x)}</dd>`).join("")
      }
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
      // served from the response cache: no call, no spend; shown once the cache was asked
      const { hits, misses, saved_usd } = v.cache
      // answers of unknown price count 0 in what was saved: with no price for the model, that 0 says nothing
      const saved =
        hits > 0 && saved_usd === 0 && v.spend.usd === null ? "unknown (no price)" : usd(saved_usd)
      if (hits + misses > 0)
        rows.push(["cache", `${count(hits, "hit")} · ${count(misses, "miss")} · saved ${saved}`])
      const pc = caching(v.prompt_cache, "unknown (no price)")
      if (pc) rows.push(["prompt cache", pc])
      const pr = priming(v.priming, "unknown (no price)")
      if (pr) rows.push(["priming", pr])
      return rows.map(([k, x]) => `<dt>${k}</dt><dd data-k="${k}">${esc(x)}</dd>`).join("")
    },

    /** Bars of items finished over the run's life, from its start at the left to its end (or now) at the right. */
    chart(c: Chart): string {
      const W = 720
      const H = 120
      const LANE = 10
      const span = Math.max(1, c.to - c.from)
      const x = (t: number) => Math.min(W, Math.max(0, ((t - c.from) / span) * W))
      const w = Math.max(1, (c.slot_ms / span) * W)
      const max = Math.max(1, ...c.points.map((p) => p.completed + p.failed))
      const per = c.slot_ms >= 60_000 ? `${c.slot_ms / 60_000} min` : `${c.slot_ms / 1000} s`
      const dated = span > 20 * 3600_000
      // a run of a few seconds: its ticks (a quarter of it apart) and its bars (under a second) need tenths to differ
      const fine = c.slot_ms < 1000
      const fineTicks = span < 4000
      const bars = c.points
        .map((p) => {
          const left = x(p.at)
          const width = Math.max(0.5, Math.min(w, W - left) * 0.85).toFixed(2)
          const hc = (p.completed / max) * (H - LANE - 4)
          const hf = (p.failed / max) * (H - LANE - 4)
          const base = H - LANE
          return `<g><title>${clock(p.at, dated, fine)}: ${num(p.completed)} completed, ${num(p.failed)} failed or needs review</title><rect class="ok" x="${left.toFixed(2)}" y="${(base - hc).toFixed(2)}" width="${width}" height="${hc.toFixed(2)}"/><rect class="bad" x="${left.toFixed(2)}" y="${(base - hc - hf).toFixed(2)}" width="${width}" height="${hf.toFixed(2)}"/></g>`
        })
        .join("")
      const capped = (n: number) => (c.error_cap !== null && n >= c.error_cap ? `${num(n)} or more` : num(n))
      const marks = c.errors
        .map((e) => {
          const strength = Math.min(
            1,
            0.35 + (0.65 * e.errors) / (c.error_cap ?? Math.max(1, ...c.errors.map((m) => m.errors))),
          )
          return `<rect class="err" x="${x(e.at).toFixed(2)}" y="${H - LANE + 2}" width="${Math.max(1.5, Math.min(w, W - x(e.at))).toFixed(2)}" height="${LANE - 2}" opacity="${strength.toFixed(2)}"><title>${clock(e.at, dated, fine)}: ${capped(e.errors)} failed attempt(s)</title></rect>`
        })
        .join("")
      const ticks = [0, 0.25, 0.5, 0.75, 1]
        .map((f) => `<span>${at(c.from + f * span, dated, fineTicks)}</span>`)
        .join("")
      const errs = c.errors.length ? `<i class="key err"></i>errors (failed attempts)` : ""
      const none = c.points.length ? "" : `<p class="muted">No item has finished yet.</p>`
      return `${none}<div class="axis"><span>highest: ${num(max)} per ${per}</span><span><i class="key ok"></i>completed<i class="key bad"></i>failed or needs review${errs}</span></div><svg viewBox="0 0 ${W} ${H}" preserveAspectRatio="none" width="100%" height="${H}" role="img" aria-label="items finished per ${per}">${bars}${marks}</svg><div class="axis ticks">${ticks}</div><div class="axis"><span>a bar: ${per}</span><span class="zone">times in ${esc(zone(c.to))}</span></div>`
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

    /** A page of the item browser: each row opens its item. */
    browse(list: ItemView[], empty: string): string {
      if (!list.length) return `<tr><td colspan="5" class="muted">${esc(empty)}</td></tr>`
      const steps = list[0]?.steps
      // a pipeline run's rows: each step's state and answer side by side, under a header of the steps (the table's
      // own header, for one-step runs, is hidden by the stylesheet)
      if (steps)
        return `<tr class="steps-head"><th>row</th>${steps.map((c) => `<th>${esc(c.step)}</th>`).join("")}</tr>${list
          .map(
            (i) =>
              `<tr data-item="${i.item_id}"><td><a href="#item=${i.item_id}">${esc(i.id)}</a>${i.match === "id" ? ` <span class="tag">id</span>` : ""}</td>${(i.steps ?? []).map(cell).join("")}</tr>`,
          )
          .join("")}`
      return list
        .map((i) => {
          const err = i.error ? `${i.error.class ?? ""}: ${i.error.message}` : ""
          const by = i.match === "id" ? ` <span class="tag">id</span>` : ""
          const cached = i.cached ? ` <span class="tag">cached</span>` : ""
          return `<tr data-item="${i.item_id}"><td><a href="#item=${i.item_id}">${esc(i.id)}</a>${by}</td><td>${chip(i.state)}${cached}</td><td>${i.attempts}</td><td class="clip">${esc(err)}</td><td class="clip">${esc(oneLine(i.output).slice(0, 300))}</td></tr>`
        })
        .join("")
    },

    /** One item opened: its input row, the request made of it, every attempt, its output. */
    item(d: ItemDetail): string {
      if (d.steps) return row(d, d.steps)
      const saved = d.prompt_cache_saved_usd
        ? ` (the prompt cache saved ${signed(d.prompt_cache_saved_usd)})`
        : ""
      const cost = d.cost_usd === null ? "" : ` · ${usd(d.cost_usd)}${saved}`
      const u = d.usage
      const used = tokens(u.input_tokens, u.output_tokens, u.cached_input_tokens, u.cache_write_tokens)
      const r = d.request
      const request =
        "unfilled" in r
          ? `<p class="alert">This row cannot fill the prompt: ${esc(r.unfilled)}.</p>`
          : `${r.system ? `<h5>system</h5><pre id="item-system">${esc(r.system)}</pre>` : ""}<h5>prompt</h5><pre id="item-prompt">${esc(r.prompt)}</pre><dl>${[
              ["provider", `${r.provider}${r.model ? ` · ${r.model}` : ""}`],
              ["max_tokens", r.max_tokens ?? "the provider's default"],
              ["temperature", r.temperature ?? "the provider's default"],
              ["params", r.params && Object.keys(r.params).length ? JSON.stringify(r.params) : "none"],
              ["output schema", r.schema ? r.schema.name : "none (free text)"],
            ]
              .map(([k, x]) => `<dt>${k}</dt><dd>${esc(x)}</dd>`)
              .join("")}</dl>`
      const attempts = d.history.length
        ? `<div class="wide"><table id="item-attempts"><thead><tr><th>#</th><th>started</th><th>ended</th><th>outcome</th><th>error</th><th>HTTP</th><th>latency</th><th>tokens</th></tr></thead><tbody>${d.history
            .map(
              (a) =>
                `<tr><td>${a.n || "—"}</td><td>${at(iso(a.started_at))}</td><td>${at(iso(a.ended_at))}</td><td>${esc(a.outcome ? word(a.outcome) : "in flight")}${a.note ? `<div class="muted">${esc(a.note)}</div>` : ""}</td><td>${a.error_class ? `<code>${esc(a.error_class)}</code> ` : ""}${esc(a.error ?? "")}</td><td>${a.http_status ?? ""}</td><td>${a.latency_ms === null ? "" : `${num(a.latency_ms)} ms`}</td><td>${a.input_tokens === null ? "" : tokens(a.input_tokens, a.output_tokens ?? 0, a.cached_input_tokens ?? 0, a.cache_write_tokens ?? 0)}</td></tr>`,
            )
            .join("")}</tbody></table></div>`
        : `<p class="muted">No attempt yet.</p>`
      const output =
        d.output === null || d.output === undefined
          ? `<p class="muted" id="item-no-output">No output${["completed", "failed", "needs_review", "rejected"].includes(d.state) ? "" : " yet"}.</p>`
          : `<pre id="item-output">${esc(pretty(d.output))}</pre>`
      // a pipeline step's item: why it waits for a person, or why it was skipped, is no error
      const why =
        d.state === "skipped"
          ? "Why it was skipped"
          : d.error?.class === "review"
            ? "Why it waits"
            : "Last error"
      const error = d.error
        ? `<h4>${why}</h4><p><code>${esc(d.error.class ?? "")}</code> ${esc(d.error.message)}</p>`
        : ""
      const paid = d.cached_usage
      const cached = paid
        ? `<p id="item-cached">Served from the response cache, with no call. Its answer was paid for once: ${num(paid.input_tokens)} in · ${num(paid.output_tokens)} out${paid.cached_input_tokens ? ` (${num(paid.cached_input_tokens)} cached)` : ""}, ${paid.cost_usd === null ? "at an unknown price" : usd(paid.cost_usd)}.</p>`
        : ""
      // an answer left for a person: approve it, edit it (the whole answer; JSON for a structured job), or reject it
      const structured = !("unfilled" in r) && !!r.schema
      const s = d.step
      const gated =
        s?.kind === "review"
          ? `The pipeline's step ${esc(s.name)} stops this row for a person`
          : "This answer failed a gate and waits for a person"
      const review =
        d.state === "needs_review"
          ? `<div id="review"><h4>Review</h4><p class="muted">${gated}: approve it as it is, correct it below${structured ? " (as JSON the output schema accepts)" : ""} and approve it, or reject it.</p><textarea id="review-output" rows="6" spellcheck="false" aria-label="the answer">${esc(d.output === null || d.output === undefined ? "" : pretty(d.output))}</textarea><input id="review-reason" type="text" maxlength="2000" placeholder="a reason (kept with the decision; a rejection's error)" aria-label="reason"><div><button data-review="approve">Approve</button><button data-review="edit">Save the edit and approve</button><button data-review="reject">Reject</button></div></div>`
          : ""
      // a step's item: its row in the pipeline (all its steps there); a review step's calls no model
      const place = s
        ? `<p id="item-step">Step <b>${esc(s.name)}</b> of ${s.row_item === null ? esc(s.parent_name) : `<a href="?run=${s.parent}#item=${s.row_item}">row ${esc(d.id)} of ${esc(s.parent_name)}</a> (every step of it)`}</p>`
        : ""
      const asked =
        s?.kind === "review"
          ? `<p class="muted" id="item-reviews">A review step calls no model: its answer is ${esc(s.needs.at(-1) ?? "")}'s, let through as it is (or edited), or stopped by a person.</p>`
          : `<h4>Request</h4>${request}<h4>Attempts</h4>${attempts}`
      return `<div class="item-head"><h3>Item <code>${esc(d.id)}</code> ${chip(d.state, "item-state")}</h3><a href="#" id="close-item">close</a></div><p class="muted">${esc(d.source.file)}, row ${d.source.row} · ${d.attempts} attempt(s) · ${used}${cost}</p>${place}${cached}<h4>${s ? "Input: the row, and the answers of the steps it reaches" : "Input row"}</h4><pre id="item-input">${esc(pretty(d.input))}</pre>${asked}<h4>Output</h4>${output}${error}${review}`
    },

    /** What the run sends and how: provider, model, mode, inputs, prompts, schema, limits. Never a key. */
    job(j: JobView): string {
      const l = j.limits
      const learn = (n: number) => (n ? num(n) : "learned from the provider")
      const rows: [string, string][] = [
        ["provider", `${j.provider} · ${j.model ?? "no model named"} · ${j.mode}`],
        ...(j.base_url ? [["base URL", j.base_url] as [string, string]] : []),
        ["API key", j.api_key_env ? `read from $${j.api_key_env}` : "read from the provider's own variable"],
        ...(Object.keys(j.options).length
          ? [["options", JSON.stringify(j.options)] as [string, string]]
          : []),
        [
          "inputs",
          j.inputs
            .map((i) => `${i.path}${i.format ? ` (${i.format})` : ""}${i.id ? `, id field "${i.id}"` : ""}`)
            .join("\n"),
        ],
        ["output schema", j.output ?? "none (free text)"],
        [
          "request",
          `max_tokens ${j.max_tokens ?? "default"} · temperature ${j.temperature ?? "default"}${Object.keys(j.params).length ? ` · params ${JSON.stringify(j.params)}` : ""}`,
        ],
        [
          "limits",
          `concurrency ${num(l.concurrency)} · rpm ${learn(l.rpm)} · tpm ${learn(l.tpm)} · max attempts ${l.max_attempts} (retries wait ${l.retry_base_s}–${l.retry_cap_s} s) · timeout ${l.timeout_s} s${l.max_cost_usd === undefined ? "" : ` · max cost ${usd(l.max_cost_usd)}`}${l.canary ? ` · canary ${num(l.canary)}` : ""}`,
        ],
        ...(j.batch
          ? [
              [
                "batch",
                `size ${j.batch.batch_size ?? "the provider's most"} · poll every ${j.batch.poll_s}–${j.batch.poll_max_s} s · max live ${j.batch.max_live || "no limit"}${l.tail_realtime ? ` · the last ${num(l.tail_realtime)} items as direct calls` : ""}`,
              ] as [string, string],
            ]
          : []),
      ]
      const system = j.system ? `<h4>System prompt</h4><pre id="job-system">${esc(j.system)}</pre>` : ""
      const review = j.reviews
        ? `<p class="muted" id="job-reviews">A review step calls no model: this is the job of ${esc(j.reviews)}, whose answers it reviews.</p>`
        : ""
      return `${review}<dl id="job-facts">${rows.map(([k, x]) => `<dt>${k}</dt><dd data-k="${k}">${esc(x)}</dd>`).join("")}</dl>${system}<h4>Prompt template</h4><pre id="job-prompt">${esc(j.prompt)}</pre>`
    },

    batches(list: BatchView[]): string {
      if (!list.length) return `<tr><td colspan="6" class="muted">No batches.</td></tr>`
      return list
        .slice(-50)
        .reverse()
        .map(
          (b) =>
            `<tr><td>#${b.id} <code>${esc(b.provider_id ?? b.tag)}</code></td><td>${esc(word(b.phase))}${b.outcome ? ` (${esc(b.outcome)})` : ""}</td><td>${esc(b.status ?? "")}</td><td>${b.done === null ? "" : `${num(b.done)} / `}${num(b.items)}${b.failed ? `, ${num(b.failed)} failed` : ""}</td><td>${at(iso(b.created_at), true)}</td><td class="clip">${esc(b.error ?? "")}</td></tr>`,
        )
        .join("")
    },

    workers(list: StatusView["worker_list"]): string {
      if (!list.length)
        return `<tr><td colspan="5" class="muted">No process is working on this run.</td></tr>`
      return list
        .map(
          (w) =>
            `<tr><td><code>${esc(w.host)}</code></td><td>${w.pid ?? ""}</td><td>${num(w.items)}</td><td>${at(iso(w.beat_at), true)}</td><td>${w.alive ? "working" : "gone"}</td></tr>`,
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
            `<li><span class="muted">${at(e.ended_at)}</span> <code>${esc(e.error_class)}</code> ${esc(e.key)} (attempt ${e.n}): ${esc(e.error ?? "")}</li>`,
        )
        .join("")
    },
  }
}
