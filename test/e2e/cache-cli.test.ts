/**
 * The response cache through `dist/spool`, on a real store: a job run twice with the offline mock (the second run
 * served whole from the cache), what `status`, `results` and the closing line say of it, and `spool cache stats`,
 * `prune` and `clear`.
 */
import { Database } from "bun:sqlite"
import { describe, expect, test } from "bun:test"
import { writeFileSync } from "node:fs"
import { join } from "node:path"
import { spool } from "../lib/spool.ts"
import { tmpdir, type Tmp } from "../lib/tmp.ts"

const TEXTS = ["one", "two", "three"]

/** The mock's answer to a row (its prompt is the row's text). */
const reply = (text: string) => `mock reply to: ${text}`
/** The mock's token counts of a prompt and its answer: a quarter of their characters, rounded up. */
const tokens = (text: string) => ({ i: Math.ceil(text.length / 4), o: Math.ceil(reply(text).length / 4) })
/** The job's price: $1,000 a million tokens in, $2,000 out (so that three answers cost a few cents). */
const cost = (text: string) => (tokens(text).i * 1000 + tokens(text).o * 2000) / 1e6
const round = (usd: number) => Math.round(usd * 1e6) / 1e6

/** A job "NAME" over in.jsonl (a, b, c) with the mock answering as `model`; priced when `priced`. */
function job(tmp: Tmp, name: string, model: string, priced: boolean): string {
  const file = `${name}.toml`
  writeFileSync(
    tmp.join(file),
    `name = "${name}"\n[source]\npath = "in.jsonl"\nid = "id"\n[provider]\nname = "mock"\nmodel = "${model}"\n[request]\nprompt = "{{text}}"\n` +
      (priced ? `[pricing]\ninput = 1000\noutput = 2000\n` : ""),
  )
  return file
}

async function setUp(tmp: Tmp) {
  writeFileSync(
    tmp.join("in.jsonl"),
    TEXTS.map((text, i) => JSON.stringify({ id: "abc"[i], text })).join("\n") + "\n",
  )
  const home = tmp.join("home")
  const cli = (...args: string[]) => spool([...args, "--home", home], { cwd: tmp.path })
  return { home, cli }
}

describe("the response cache from the command line", () => {
  test("a job run again is served from the cache: the closing line, status and results say so, at no cost", async () => {
    await using tmp = await tmpdir()
    const { cli } = await setUp(tmp)
    const file = job(tmp, "labels", "mock-a", true)
    const first = await cli("run", file)
    expect(first.code).toBe(0)
    expect(first.stderr).toContain('run "labels": 3 completed, 0 failed of 3 — ')
    const again = await cli("run", file, "--new-run")
    expect(again.code).toBe(0)
    const saved = round(TEXTS.reduce((sum, t) => sum + cost(t), 0))
    expect(saved).toBe(0.034)
    expect(again.stderr).toContain(
      'run "labels": 3 completed (3 from the cache, saved $0.034), 0 failed of 3 — `spool results labels` for the outputs\n',
    )

    // the first run asked and missed; the second was all hits, and spent nothing
    const view = async (run: string) => JSON.parse((await cli("status", run, "--json")).stdout)
    expect((await view("1")).cache).toEqual({ hits: 0, misses: 3, saved_usd: 0 })
    const served = await view("2")
    expect([served.cache, served.spend.usd, served.attempts]).toEqual([
      { hits: 3, misses: 0, saved_usd: 0.034 },
      0,
      0,
    ])
    const text = await cli("status", "2")
    expect(text.stdout.split("\n").slice(1, 5)).toEqual([
      "items     3: completed 3",
      "attempts  0 · tokens in 0 out 0",
      "spend     $0.00 so far (the job's [pricing])",
      "cache     3 hits · 0 misses · saved $0.034",
    ])
    expect((await cli("status", "1")).stdout).toContain("\ncache     0 hits · 3 misses · saved $0.00\n")

    const lines = async (run: string) =>
      (await cli("results", run)).stdout
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l))
    const source = (i: number) => ({ file: tmp.join("in.jsonl"), row: i + 1, id: "abc"[i] })
    expect(await lines("2")).toEqual(
      TEXTS.map((t, i) => ({
        id: "abc"[i],
        state: "completed",
        output: reply(t),
        error: null,
        attempts: 0,
        usage: { input_tokens: 0, output_tokens: 0, cached_input_tokens: 0, cache_write_tokens: 0 },
        cost_usd: 0,
        prompt_cache_saved_usd: 0,
        cached: true,
        cached_usage: {
          input_tokens: tokens(t).i,
          output_tokens: tokens(t).o,
          cached_input_tokens: 0,
          cost_usd: cost(t),
        },
        source: source(i),
      })),
    )
    expect(await lines("1")).toEqual(
      TEXTS.map((t, i) => ({
        id: "abc"[i],
        state: "completed",
        output: reply(t),
        error: null,
        attempts: 1,
        usage: {
          input_tokens: tokens(t).i,
          output_tokens: tokens(t).o,
          cached_input_tokens: 0,
          cache_write_tokens: 0,
        },
        cost_usd: cost(t),
        prompt_cache_saved_usd: 0,
        cached: false,
        source: source(i),
      })),
    )
  })

  test("cache stats gives exact figures; prune --older-than and clear --model remove exactly what they say", async () => {
    await using tmp = await tmpdir()
    const { home, cli } = await setUp(tmp)
    const a = job(tmp, "a", "mock-a", true)
    expect((await cli("run", a)).code).toBe(0)
    expect((await cli("run", a, "--new-run")).code).toBe(0)
    // another model: two rows of its own (the same prompts are other requests to it)
    writeFileSync(
      tmp.join("in.jsonl"),
      TEXTS.slice(0, 2)
        .map((text, i) => JSON.stringify({ id: "ab"[i], text }))
        .join("\n") + "\n",
    )
    expect((await cli("run", job(tmp, "b", "mock-b", false))).code).toBe(0)
    const size = (texts: string[]) => texts.reduce((sum, t) => sum + Buffer.byteLength(reply(t)), 0)
    const [sizeA, sizeB] = [size(TEXTS), size(TEXTS.slice(0, 2))]
    expect([sizeA, sizeB]).toEqual([56, 36])

    // a's answers aged 40 days in the store itself: no test waits a month
    const db = new Database(join(home, "spool.db"))
    const DAY = 86_400_000
    db.run("UPDATE cache SET created_at = created_at - ? WHERE model = 'mock-a'", [40 * DAY])
    const times = db
      .query<{ model: string; at: number }, []>(
        "SELECT model, max(created_at) AS at FROM cache GROUP BY model",
      )
      .all()
    db.close()
    const at = Object.fromEntries(times.map((t) => [t.model, t.at]))

    const stats = await cli("cache", "stats", "--json")
    expect(stats.code).toBe(0)
    expect(JSON.parse(stats.stdout)).toEqual({
      entries: 5,
      bytes: sizeA + sizeB,
      hits: 3,
      misses: 5,
      saved_usd: 0.034,
      oldest: expect.any(String),
      newest: new Date(at["mock-b"]!).toISOString(),
      models: [
        { provider: "mock", model: "mock-a", entries: 3, bytes: sizeA },
        { provider: "mock", model: "mock-b", entries: 2, bytes: sizeB },
      ],
    })
    expect(Date.parse(JSON.parse(stats.stdout).oldest)).toBeLessThanOrEqual(at["mock-a"]!)
    const text = (await cli("cache", "stats")).stdout.split("\n")
    expect(text.slice(0, 2)).toEqual([
      "entries   5 (92 B)",
      "served    3 hits · 5 misses · saved $0.034 (every run of this store)",
    ])
    expect(text[2]).toMatch(/^oldest {4}\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(40d ago\)$/)
    expect(text[3]).toMatch(/^newest {4}\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(\d+s ago\)$/)
    expect(text.slice(4)).toEqual([
      "models",
      "  provider  model   entries  size",
      "  mock      mock-a        3  56 B",
      "  mock      mock-b        2  36 B",
      "",
    ])

    // older than 30 days: a's three, and only those
    const pruned = await cli("cache", "prune", "--older-than", "30d")
    expect(pruned.code).toBe(0)
    expect(pruned.stderr).toMatch(
      /^removed 3 entries \(56 B\) written before \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\n$/,
    )
    const cutoff = Date.parse(/written before (\S+)\n/.exec(pruned.stderr)![1]!)
    expect(cutoff).toBeGreaterThan(at["mock-a"]!)
    expect(cutoff).toBeLessThan(at["mock-b"]!)
    // the default is 30 days too: nothing more is that old
    expect(JSON.parse((await cli("cache", "prune", "--json")).stdout)).toMatchObject({ entries: 0, bytes: 0 })
    const left = JSON.parse((await cli("cache", "stats", "--json")).stdout)
    expect([left.entries, left.bytes, left.models]).toEqual([
      2,
      sizeB,
      [{ provider: "mock", model: "mock-b", entries: 2, bytes: sizeB }],
    ])

    const none = await cli("cache", "clear", "--model", "mock-a")
    expect([none.code, none.stderr]).toEqual([
      0,
      'removed 0 entries (0 B): the cache has no entries of model "mock-a"; it has "mock-b"\n',
    ])
    const cleared = await cli("cache", "clear", "--model", "mock-b")
    expect([cleared.code, cleared.stderr]).toEqual([0, 'removed 2 entries (36 B) of model "mock-b"\n'])
    const empty = await cli("cache", "stats")
    expect(empty.stdout).toBe(
      "entries   0: the cache is empty (a run writes each answer it pays for)\nserved    3 hits · 5 misses · saved $0.034 (every run of this store)\n",
    )
    // what the runs were served is theirs: clearing the cache does not take it back
    expect(JSON.parse((await cli("status", "2", "--json")).stdout).cache).toEqual({
      hits: 3,
      misses: 0,
      saved_usd: 0.034,
    })
    expect(JSON.parse((await cli("cache", "clear", "--json")).stdout)).toEqual({
      entries: 0,
      bytes: 0,
      model: null,
    })
  })

  test("a bad duration, a missing or unknown subcommand, and a folder without a store are refused with exit 2", async () => {
    await using tmp = await tmpdir()
    const { cli } = await setUp(tmp)
    expect(await cli("cache", "stats")).toEqual({
      code: 2,
      stdout: "",
      stderr:
        "spool: no spool store in " +
        tmp.join("home") +
        " — start a run with `spool run job.toml`\n  Or point --home (or SPOOL_HOME) at the folder that holds one.\n",
    })
    expect((await cli("run", job(tmp, "a", "mock-a", false))).code).toBe(0)
    for (const bad of ["30", "3x", "-1d", "d"])
      expect(await cli("cache", "prune", `--older-than=${bad}`)).toEqual({
        code: 2,
        stdout: "",
        stderr: `spool: --older-than: "${bad}" is not a duration\n  Give a number and a unit: s, m, h, d or w (seconds to weeks), such as 30d, 12h or 2w.\n`,
      })
    expect(await cli("cache")).toMatchObject({
      code: 2,
      stderr: "spool: spool cache: say which: stats, prune, clear\n  See `spool cache --help`.\n",
    })
    expect(await cli("cache", "stat")).toMatchObject({
      code: 2,
      stderr:
        'spool: unknown command "cache stat"; did you mean "cache stats"?\n  See `spool cache --help`.\n',
    })
    expect(await cli("cache", "clear", "--modle", "x")).toMatchObject({
      code: 2,
      stderr: "spool: unknown flag --modle; did you mean --model?\n  See `spool <command> --help`.\n",
    })
    // nothing was removed by the refusals
    expect(JSON.parse((await cli("cache", "stats", "--json")).stdout).entries).toBe(3)
    const help = await spool(["cache", "--help"], { cwd: tmp.path, env: { NO_COLOR: "1" } })
    expect(help.stdout).toContain("USAGE spool cache stats|prune|clear")
    const prune = await spool(["cache", "prune", "--help"], { cwd: tmp.path, env: { NO_COLOR: "1" } })
    expect(prune.stdout).toContain("USAGE spool cache prune [OPTIONS]")
    expect(prune.stdout).toContain("--older-than=<duration>")
  })
})
