/**
 * The status page (DESIGN §9): one server-rendered HTML document with a small inline script. The parts that change
 * while a run goes are drawn by `views()` (page/views.ts), a self-contained function the server calls to render the
 * page and whose source the page embeds, so the first paint and every live update are drawn by the same code, with
 * no build step, no CDN, and nothing fetched but the page's own API.
 */
import { script } from "./page/client.ts"
import { STYLE } from "./page/style.ts"
import type { ItemPage, JobView, RunDetail, RunRow } from "./page/types.ts"
import { views } from "./page/views.ts"

type Views = ReturnType<typeof views>

/** The item browser: a search box, a state filter, a page of items, and the item opened (by its address). */
function browser(V: Views, v: RunDetail, first: ItemPage): string {
  const options = Object.keys(v.counts)
    .map((s) => `<option value="${s}">${V.word(s)}</option>`)
    .join("")
  return `<h3>Items</h3>
  <div class="find" role="search"><input id="q" type="search" placeholder="an item's id, or text of its input row, output or error" aria-label="search the items" maxlength="200"><select id="state" aria-label="of one state"><option value="">every state</option>${options}</select><button type="button" id="search">Search</button><button type="button" id="clear">Clear</button><button type="button" id="stop" hidden>Stop</button></div>
  <div id="found" role="status"></div>
  <div class="wide"><table><thead><tr><th>id</th><th>state</th><th>attempts</th><th>last error</th><th>output</th></tr></thead><tbody id="browse">${V.browse(first.items, "No items yet.")}</tbody></table></div>
  <div class="pager"><button type="button" id="prev" disabled>← Previous</button><button type="button" id="next"${first.next === null ? " disabled" : ""}>Next →</button></div>
  <section id="item" hidden aria-live="polite"><div id="item-body"></div></section>`
}

/** The whole page: every run, and the selected one (null: none yet) in detail, with its job and its items. */
export function render(o: {
  runs: RunRow[]
  run: RunDetail | null
  job: JobView | null
  items: ItemPage
  recent: Parameters<Views["recent"]>[0]
  nonce: string
  version: string
}): string {
  const V = views()
  const v = o.run
  const job = o.job ? `<details id="job" open><summary>Job</summary>${V.job(o.job)}</details>` : ""
  const detail = v
    ? `
<section id="run">
  <div id="head">${V.head(v)}</div>
  <div id="controls">${V.controls(v)}</div><div id="message" role="status"></div>
  <div class="tiles" id="counts">${V.counts(v)}</div>
  <dl id="figures">${V.figures(v)}</dl>
  ${job}
  <h3>Items finished over time</h3><div id="chart">${V.chart(v.chart)}</div>
  ${browser(V, v, o.items)}
  <h3>Error classes</h3><div class="wide"><table><thead><tr><th>class</th><th>attempts</th><th>example</th></tr></thead><tbody id="errors">${V.errors(v.errors)}</tbody></table></div>
  <h3>Latest errors</h3><ul id="recent">${V.recent(o.recent)}</ul>
  <h3>Workers</h3><div class="wide"><table><thead><tr><th>host</th><th>pid</th><th>items held</th><th>last heartbeat</th><th></th></tr></thead><tbody id="workers">${V.workers(v.worker_list)}</tbody></table></div>
  <h3>Batches</h3><div class="wide"><table><thead><tr><th>batch</th><th>phase</th><th>provider status</th><th>requests</th><th>created</th><th>error</th></tr></thead><tbody id="batches">${V.batches(v.batches)}</tbody></table></div>
  <h3>Malformed input lines</h3><ul id="malformed">${V.malformed(v.malformed)}</ul>
</section>`
    : ""
  // the live errors start just after the newest one listed (or now, when none is)
  const since = v
    ? String(o.recent.length ? Math.max(...o.recent.map((e) => e.ended_at)) + 1 : Date.now())
    : ""
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${v ? `${V.esc(v.name)} · ` : ""}spool</title><link rel="icon" href="data:,"><style nonce="${o.nonce}">${STYLE}</style></head>
<body data-run="${v ? v.id : ""}" data-total="${v ? v.total : ""}" data-counts="${v ? V.esc(JSON.stringify(v.counts)) : ""}" data-next="${o.items.next ?? ""}" data-since="${since}">
<header><h1>spool</h1><span class="muted">${V.esc(o.version)}</span><span id="live" class="live">live</span></header>
<main>
<div class="wide"><table><thead><tr><th>run</th><th>state</th><th>progress</th><th>rate</th><th>ETA</th><th>spend</th></tr></thead><tbody id="runs">${V.runs(o.runs, v ? v.id : null)}</tbody></table></div>
${detail}
</main>
<script nonce="${o.nonce}">${script(views.toString())}</script>
</body></html>`
}
