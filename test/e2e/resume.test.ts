/**
 * What a run stopped by its spend cap or by `spool cancel` says to do next, through the compiled binary against the
 * fake OpenAI server, and that doing it goes on where the run stopped without paying for anything twice.
 */
import { describe, expect, test } from "bun:test"
import { writeFileSync } from "node:fs"
import { startFake } from "../lib/fake-openai.ts"
import { spool, start, until } from "../lib/spool.ts"
import { tmpdir } from "../lib/tmp.ts"

const KEY = "sk-test-resume-0123456789"
const env = { OPENAI_API_KEY: KEY }

function job(url: string, limits = ""): string {
  return `name = "goes-on"
[source]
path = "in.jsonl"
id = "id"
[provider]
name = "openai"
model = "gpt-4.1-mini"
base_url = "${url}"
[request]
prompt = "Item {{n}}"
max_tokens = 20
[limits]
concurrency = 4
${limits}
`
}

const input = (n: number) =>
  Array.from({ length: n }, (_, i) => JSON.stringify({ id: `id-${i + 1}`, n: i + 1 })).join("\n") + "\n"

type Line = { id: string; state: string }

async function results(cwd: string, home: string): Promise<Line[]> {
  const out = await spool(["results", "--home", home], { cwd, env })
  return out.stdout
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as Line)
}

describe("going on with a stopped run", () => {
  test("the spend cap's hint gives the command with one --max-cost-usd, the cap's value replaced; run with a higher cap, it finishes", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY })
    writeFileSync(tmp.join("in.jsonl"), input(60))
    writeFileSync(tmp.join("job.toml"), job(fake.url))
    const home = tmp.join("home")
    const capped = await spool(["run", "job.toml", "--max-cost-usd", "0.00015", "--home", home], {
      cwd: tmp.path,
      env,
    })
    expect(capped.code).toBe(1)
    expect(capped.stderr).toContain(
      `Nothing more was started. To go on, raise the cap: spool run job.toml --max-cost-usd N --home ${home}\n`,
    )
    expect(capped.stderr.match(/--max-cost-usd/g)?.length).toBe(1)
    // with the cap in the job file instead, the flag is added once
    writeFileSync(tmp.join("job.toml"), job(fake.url, "max_cost_usd = 0.0003"))
    const again = await spool(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
    expect(again.code).toBe(1)
    expect(again.stderr).toContain(`raise the cap: spool run job.toml --home ${home} --max-cost-usd N\n`)
    const done = await spool(["run", "job.toml", "--max-cost-usd=1", "--home", home], { cwd: tmp.path, env })
    expect(done.code).toBe(0)
    expect([...fake.paid.values()]).toEqual(Array(60).fill(1))
  }, 60_000)

  test("spool cancel says what is kept and that spool run goes on with the rest; spool run does, sending nothing finished again", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: KEY, latencyMs: 40 })
    writeFileSync(tmp.join("in.jsonl"), input(200))
    writeFileSync(tmp.join("job.toml"), job(fake.url))
    const home = tmp.join("home")
    const child = start(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
    await until(() => fake.paid.size >= 20, 20_000, "20 completions")
    const cancel = await spool(["cancel", "--home", home], { cwd: tmp.path, env })
    expect(cancel.code).toBe(0)
    const said =
      /run "goes-on" cancelled: (\d+) finished item\(s\) kept \(`spool results` gives them\), (\d+) left\. `spool run job\.toml --home (\S+)` goes on with the (\d+) left and sends nothing finished again; add --new-run to start over instead\.\n/.exec(
        cancel.stderr,
      )
    expect(said).not.toBeNull()
    const [finished, left] = [Number(said![1]), Number(said![2])]
    expect([finished + left, said![3], Number(said![4])]).toEqual([200, home, left])
    const [stderr, code] = await Promise.all([new Response(child.stderr).text(), child.exited])
    expect(code).toBe(1)
    expect(stderr).toContain(
      `spool: run "goes-on" was cancelled\n  ${said![0].slice(`run "goes-on" cancelled: `.length)}`,
    )
    const lines = await results(tmp.path, home)
    expect(lines.filter((l) => l.state === "completed").length).toBe(finished)
    expect(lines.filter((l) => l.state === "pending").length).toBe(left)

    // a cancelled run cannot be paused; the refusal says how to go on
    const pause = await spool(["pause", "--home", home], { cwd: tmp.path, env })
    expect(pause.code).toBe(2)
    expect(pause.stderr).toContain('run "goes-on" is cancelled: there is nothing to pause\n')
    expect(pause.stderr).toContain(`goes on with the ${left} left`)

    const sent = fake.requests
    const resumed = await spool(["run", "job.toml", "--home", home], { cwd: tmp.path, env })
    expect(resumed.code).toBe(0)
    expect(resumed.stderr).toContain(
      `run "goes-on" was cancelled: going on with its ${left} item(s) left; the ${finished} finished are kept (--new-run starts over)`,
    )
    expect(resumed.stderr).toContain('run "goes-on": 200 completed, 0 failed of 200')
    // the items left, each once; nothing finished was sent again
    expect(fake.requests - sent).toBe(left)
    expect([...fake.paid.values()]).toEqual(Array(200).fill(1))
  }, 60_000)
})
