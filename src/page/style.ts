/** The page's stylesheet: inline, under the page's CSP nonce (no style attributes anywhere: the CSP refuses them). */
export const STYLE = `
:root{--ok:#2e9d57;--bad:#d0453a;--warn:#b7791f;--mut:#6b7280;--line:#e5e7eb;--bg:#fff;--fg:#111827;--link:#1d4ed8;--code:#f3f4f6;font:14px/1.45 system-ui,sans-serif}
@media (prefers-color-scheme:dark){:root{--line:#374151;--bg:#111827;--fg:#e5e7eb;--mut:#9ca3af;--link:#93c5fd;--code:#1f2937}}
a{color:var(--link)}.wide{overflow-x:auto}[hidden]{display:none!important}
body{margin:0;background:var(--bg);color:var(--fg)}header{padding:10px 20px;border-bottom:1px solid var(--line);display:flex;gap:12px;align-items:baseline}
header h1{font-size:18px;margin:0}main{padding:12px 20px;max-width:1200px}h2{font-size:17px;margin:18px 0 8px}h3{font-size:14px;margin:18px 0 6px}
h4{font-size:13px;margin:14px 0 4px}h5{font-size:12px;margin:8px 0 2px;color:var(--mut);font-weight:600}
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:4px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{font-weight:600;color:var(--mut)}tr.sel{background:rgba(46,157,87,.08)}td.grow{width:40%}td.clip{max-width:380px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
pre{background:var(--code);padding:8px 10px;border-radius:5px;overflow:auto;max-height:360px;white-space:pre-wrap;word-break:break-word;margin:4px 0}
code{background:var(--code);padding:0 3px;border-radius:3px}
.bar{display:block;width:100%;height:8px;background:var(--line);border-radius:4px;overflow:hidden;margin:4px 0}
.prog{display:flex;align-items:center;gap:8px}.prog .bar{flex:1;min-width:60px;margin:0}.prog span{white-space:nowrap}
.ok{background:var(--ok);fill:var(--ok)}.bad{background:var(--bad);fill:var(--bad)}.err{background:var(--warn);fill:var(--warn)}.muted{color:var(--mut)}
.tiles{display:flex;flex-wrap:wrap;gap:8px}.tile{border:1px solid var(--line);border-radius:6px;padding:6px 10px;min-width:92px;margin:0;text-align:left;font:inherit}.tile b{display:block;font-size:18px}.tile span{color:var(--mut);font-size:12px}.tile.zero{opacity:.55}.tile.on{border-color:var(--link)}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:10px 0}dt{color:var(--mut)}dd{margin:0;white-space:pre-line;word-break:break-word}
.st{font-size:12px;padding:1px 6px;border-radius:9px;border:1px solid var(--line);white-space:nowrap}.st-running,.st-completed{color:var(--ok)}.st-paused,.st-cancelling,.st-retry_wait{color:var(--warn)}.st-failed,.st-cancelled,.st-completed_with_failures,.st-needs_review,.st-rejected{color:var(--bad)}
.st-interrupted{color:#fff;background:var(--warn);border-color:var(--warn)}
.alert{border-left:3px solid var(--warn);padding:6px 10px;background:rgba(183,121,31,.08);margin:6px 0}.resume{font-size:12px;color:var(--mut)}
.tag{font-size:11px;color:var(--mut);border:1px solid var(--line);border-radius:4px;padding:0 4px}
#review textarea,#review input{display:block;width:100%;box-sizing:border-box;margin:0 0 6px;padding:6px 8px;border:1px solid var(--line);border-radius:5px;background:transparent;color:inherit;font:12px ui-monospace,monospace}#review input{font:inherit}
button,a.button{margin:0 6px 6px 0;padding:4px 10px;border:1px solid var(--line);border-radius:5px;background:transparent;color:inherit;cursor:pointer;font:inherit;text-decoration:none;display:inline-block}button:disabled{opacity:.4;cursor:default}
#message{min-height:1.3em;color:var(--mut);margin-bottom:6px}#controls{margin-top:8px}
#chart svg{display:block;border-bottom:1px solid var(--line)}.axis{display:flex;justify-content:space-between;font-size:12px;color:var(--mut);margin:2px 0}
.key{display:inline-block;width:9px;height:9px;border-radius:2px;margin:0 4px 0 8px}ul{padding-left:18px;margin:4px 0}
.find{display:flex;flex-wrap:wrap;gap:6px;align-items:center;margin:6px 0}.find input,.find select{font:inherit;padding:4px 8px;border:1px solid var(--line);border-radius:5px;background:transparent;color:inherit}.find input{flex:1;min-width:220px}.find button{margin:0}
#found{color:var(--mut);font-size:12px;min-height:1.3em}#browse tr[data-item]{cursor:pointer}#browse tr.open{background:rgba(29,78,216,.08)}
#item{border:1px solid var(--line);border-radius:8px;padding:4px 14px 10px;margin:10px 0}.item-head{display:flex;justify-content:space-between;align-items:baseline}
details>summary{cursor:pointer;font-weight:600;font-size:14px;margin:18px 0 6px}
.live{font-size:12px;color:var(--mut)}.live.on::before{content:"● ";color:var(--ok)}
.skip{fill:var(--mut);opacity:.5}.graph{flex:1 1 100%;overflow-x:auto}.graph svg{display:block;margin:4px 0}.graph .box{fill:var(--bg);stroke:var(--line);stroke-width:1.5}.graph .node:hover .box{stroke:var(--link)}
.graph .box.st-running,.graph .box.st-completed{stroke:var(--ok)}.graph .box.st-paused,.graph .box.st-cancelling{stroke:var(--warn)}.graph .box.st-failed,.graph .box.st-completed_with_failures,.graph .box.st-cancelled{stroke:var(--bad)}
.graph text{fill:var(--fg);font-size:12px}.graph .name{font-weight:600;font-size:14px}.graph .kind,.graph .k{fill:var(--mut)}.graph .kind{font-size:11px}.graph .n{text-anchor:end;font-variant-numeric:tabular-nums}.graph .zero{opacity:.45}
.graph .edge{fill:none;stroke:var(--mut);stroke-width:1.5}.graph .head{fill:var(--mut)}body:has(#counts .graph) #state{display:none}
table:has(tr.steps-head)>thead{display:none}tr.step td:first-child{padding-left:24px}td.cell{max-width:260px}td.cell .out{overflow:hidden;text-overflow:ellipsis;white-space:nowrap;font-size:12px;color:var(--mut)}
.steps{display:grid;grid-template-columns:repeat(auto-fit,minmax(220px,1fr));gap:10px}.steps .step{border:1px solid var(--line);border-radius:6px;padding:0 10px 8px;min-width:0}
@media (max-width:700px){td.grow{width:auto}td.clip{max-width:160px}}
`
