/**
 * The page's script, as the text of an inline <script>: live updates from the events stream, the controls, and the
 * item browser (search, filter, pages, one item opened). It draws with `views()`, whose source it is given.
 */
export function script(viewsSource: string): string {
  // in a function of its own: nothing of it becomes a global a page or an extension could overwrite
  return `(() => {
const V = (${viewsSource})();
const $ = (id) => document.getElementById(id);
// what each part was last drawn from: innerHTML reads back normalized (disabled="", quotes), never equal to it
const drawn = {};
const put = (id, html) => {
  const el = $(id);
  if (el && drawn[id] !== html) { drawn[id] = html; el.innerHTML = html; }
};
const runId = document.body.dataset.run ? Number(document.body.dataset.run) : null;
const api = (path) => fetch("api/runs/" + runId + path).then(async (r) => {
  const j = await r.json().catch(() => ({ error: r.status + " " + r.statusText }));
  if (!r.ok) throw new Error(j.error || String(r.status));
  return j;
});

// times the server drew, in its zone: drawn again in this browser's
function localize() {
  for (const t of document.querySelectorAll("time[data-t]")) t.textContent = V.clock(Number(t.dataset.t), "dated" in t.dataset, "tenths" in t.dataset);
  for (const z of document.querySelectorAll(".zone")) z.textContent = "times in " + V.zone(Date.now());
}

// ---- the item browser: a page of items (or of a search's finds) at a time, each request bounded
const PAGE = 50;
const B = { q: "", state: "", after: null, back: [], next: null, seq: 0, counts: {}, total: 0, busy: false, refreshed: 0 };
// what a search reads through: the run's items, or those of the state it is filtered by
const among = () => (B.state ? (B.counts[B.state] || 0).toLocaleString("en-US") + " " + V.word(B.state) : B.total.toLocaleString("en-US")) + " items";
function query(extra) {
  const p = new URLSearchParams({ limit: String(PAGE), ...extra });
  if (B.q) p.set("q", B.q);
  if (B.state) p.set("state", B.state);
  return "/items?" + p;
}
function pager() {
  $("prev").disabled = B.back.length === 0 || B.busy;
  $("next").disabled = B.next === null || B.busy;
  $("stop").hidden = !B.busy;
  for (const t of document.querySelectorAll("#counts .tile")) t.classList.toggle("on", t.dataset.state === B.state);
}
/** Draws the page that starts after \`after\` (null: the first); a search goes on, request by request, until a page is full. */
async function load(after) {
  const seq = ++B.seq;
  B.after = after; B.busy = !!B.q; pager();
  const found = []; let cursor = after; let scanned = 0;
  // going: the search reads on; else it has stopped (a full page, or Stop) where Next goes on, or at the run's end
  const draw = (going) => {
    const rest = cursor === null ? " (to the run's end)" : going ? "…" : " · Next searches on";
    const empty = B.q ? "Nothing found" + (cursor === null ? "." : going ? " yet…" : " so far.") : B.state ? "No " + V.word(B.state) + " items." : "No items yet.";
    put("browse", V.browse(found, empty));
    $("found").textContent = B.q
      ? found.length + " found · " + scanned.toLocaleString("en-US") + " of " + among() + " searched from here" + rest
      : "";
  };
  try {
    do {
      const r = await api(query(cursor === null ? { limit: String(PAGE - found.length) } : { after: cursor, limit: String(PAGE - found.length) }));
      if (seq !== B.seq) return;
      found.push(...r.items); cursor = r.next; scanned += r.scanned || 0;
      draw(B.busy);
    } while (B.q && cursor !== null && found.length < PAGE && B.busy && seq === B.seq);
    B.next = cursor;
    if (B.q && seq === B.seq) draw(false);
  } catch (err) {
    if (seq === B.seq) $("found").textContent = String(err.message || err);
  }
  if (seq === B.seq) { B.busy = false; B.refreshed = Date.now(); pager(); markOpen(); }
}
function restart() { B.back = []; load(null); }
function markOpen() {
  const open = openId();
  for (const tr of document.querySelectorAll("#browse tr[data-item]")) tr.classList.toggle("open", Number(tr.dataset.item) === open);
}

// ---- one item, opened by its address (#item=ID), so that it can be linked and survives a reload
const openId = () => { const m = /^#item=(\\d+)$/.exec(location.hash); return m ? Number(m[1]) : null; };
let shown = null;
async function openItem(e) {
  const id = openId();
  markOpen();
  if (id === null) { $("item").hidden = true; shown = null; return; }
  try {
    const d = await api("/items/" + id);
    if (openId() !== id) return;
    put("item-body", V.item(d)); $("item").hidden = false; shown = d;
    // opened by the reader (a click, a link), not redrawn by an update: brought into view
    if (e) $("item").scrollIntoView({ block: "nearest" });
  } catch (err) { put("item-body", "<p class=\\"alert\\">" + V.esc(err.message || err) + "</p>"); $("item").hidden = false; shown = null; }
}
const FINAL = ["completed", "failed", "needs_review", "rejected"];

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
    B.counts = v.counts; B.total = v.total;
    put("head", V.head(v)); put("controls", V.controls(v)); put("counts", V.counts(v));
    put("figures", V.figures(v)); put("chart", V.chart(v.chart)); put("errors", V.errors(v.errors));
    put("batches", V.batches(v.batches)); put("workers", V.workers(v.worker_list)); put("malformed", V.malformed(v.malformed));
    pager();
    // a browsed page follows the run (a search does not: it is read again only when asked), at most every 2 s
    if (!B.q && !B.busy && Date.now() - B.refreshed > 2000) load(B.after);
    if (shown && !FINAL.includes(shown.state)) openItem(null);
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
  const tile = e.target.closest("#counts .tile");
  if (tile) { B.state = B.state === tile.dataset.state ? "" : tile.dataset.state; $("state").value = B.state; restart(); return; }
  const row = e.target.closest("#browse tr[data-item]");
  if (row && !e.target.closest("a")) { location.hash = "item=" + row.dataset.item; return; }
  if (e.target.id === "close-item") { e.preventDefault(); history.pushState(null, "", location.pathname + location.search); openItem(null); return; }
  const decide = e.target.closest("button[data-review]");
  if (decide && shown && runId) { await review(decide); return; }
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

// a decision on the opened item (README, "Review"); refused, it says why and changes nothing
async function review(button) {
  const decision = button.dataset.review;
  const body = { id: shown.id, decision };
  const reason = $("review-reason").value.trim();
  if (reason) body.reason = reason;
  if (decision === "edit") body.output = $("review-output").value;
  for (const b of document.querySelectorAll("button[data-review]")) b.disabled = true;
  try {
    const r = await fetch("api/runs/" + runId + "/review", {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
    });
    const j = await r.json().catch(() => ({ error: r.status + " " + r.statusText }));
    $("message").textContent = j.message || j.error || "";
    if (r.ok) { await openItem(null); if (!B.q) load(B.after); return; }
  } catch (err) { $("message").textContent = String(err); }
  for (const b of document.querySelectorAll("button[data-review]")) b.disabled = false;
}

if (runId) {
  B.total = Number(document.body.dataset.total || 0);
  B.counts = JSON.parse(document.body.dataset.counts || "{}");
  B.next = document.body.dataset.next || null;
  B.refreshed = Date.now();
  const go = () => { B.q = $("q").value.trim(); B.state = $("state").value; restart(); };
  $("search").addEventListener("click", go);
  $("q").addEventListener("keydown", (e) => { if (e.key === "Enter") go(); });
  $("state").addEventListener("change", go);
  $("clear").addEventListener("click", () => { $("q").value = ""; $("state").value = ""; go(); });
  $("stop").addEventListener("click", () => { B.busy = false; });
  $("next").addEventListener("click", () => { B.back.push(B.after); load(B.next); });
  $("prev").addEventListener("click", () => { load(B.back.pop() ?? null); });
  window.addEventListener("hashchange", openItem);
  pager();
  openItem(null);
}
localize();
connect();
})();
`
}
