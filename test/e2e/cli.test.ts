import { describe, expect, test } from "bun:test"
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  statSync,
  writeFileSync,
} from "node:fs"
import { dirname, join } from "node:path"
import { startFake } from "../lib/fake-openai.ts"
import { BIN, spool, start } from "../lib/spool.ts"
import { tmpdir } from "../lib/tmp.ts"

const KEY = "sk-test-SECRET-do-not-leak-4242"

function walk(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? walk(join(dir, e.name)) : [join(dir, e.name)],
  )
}

/** The ids of result lines (JSONL), in order. */
const idsOf = (jsonl: string) =>
  jsonl
    .trim()
    .split("\n")
    .map((l) => (JSON.parse(l) as { id: string }).id)

describe("dist/spool", () => {
  test("prints its version and its licence; the licence is MIT in package.json and LICENSE", async () => {
    await using tmp = await tmpdir()
    const pkg = (await Bun.file(join(import.meta.dir, "../../package.json")).json()) as {
      version: string
      license: string
    }
    for (const flag of ["--version", "-v"])
      expect(await spool([flag], { cwd: tmp.path })).toEqual({
        code: 0,
        stdout: `spool ${pkg.version} (MIT licence)\n`,
        stderr: "",
      })
    expect(pkg.license).toBe("MIT")
    const licence = readFileSync(join(import.meta.dir, "../../LICENSE"), "utf8")
    expect(licence.split("\n").slice(0, 3)).toEqual([
      "MIT License",
      "",
      "Copyright (c) 2026 the spool authors",
    ])
  })

  test("runs the quickstart offline with the mock provider and writes owner-only files", async () => {
    await using tmp = await tmpdir()
    const dir = join(import.meta.dir, "../../examples/quickstart")
    const home = tmp.join("home")
    const run = await spool(["run", "job.toml", "--home", home], { cwd: dir })
    expect(run.code).toBe(0)
    expect(run.stderr).toContain('run "quickstart": 12 completed, 0 failed of 12')
    const results = await spool(["results", "--home", home, "--out", tmp.join("r.jsonl")], { cwd: dir })
    expect(results.code).toBe(0)
    const lines = readFileSync(tmp.join("r.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l))
    expect(lines.length).toBe(12)
    expect(lines[0]).toEqual({
      id: "T-1001",
      state: "completed",
      output: "label for: Charged twice this month",
      error: null,
      attempts: 1,
      usage: { input_tokens: 20, output_tokens: 9, cached_input_tokens: 0, cache_write_tokens: 0 },
      cost_usd: null, // mock-1 has no price: unknown, not 0
      prompt_cache_saved_usd: null,
      cached: false,
      source: { file: join(dir, "tickets.jsonl"), row: 1, id: "T-1001" },
    })
    expect(statSync(tmp.join("r.jsonl")).mode & 0o777).toBe(0o600)
    expect(statSync(home).mode & 0o777).toBe(0o700)
    for (const file of walk(home)) expect(statSync(file).mode & 0o777).toBe(0o600)
  })

  test("on a terminal, progress is one line redrawn in place; elsewhere, plain lines", async () => {
    await using tmp = await tmpdir()
    const dir = join(import.meta.dir, "../../examples/quickstart")
    // script(1) gives the binary a pseudo-terminal, as a person's shell would
    const tty = Bun.spawnSync(
      ["script", "-qec", `${BIN} run job.toml --home ${tmp.join("a")}`, "/dev/null"],
      { cwd: dir },
    )
    const screen = tty.stdout.toString()
    expect(tty.exitCode).toBe(0)
    expect(screen).toContain("\r\x1b[K12/12 done · 0 failed")
    const plain = await spool(["run", "job.toml", "--home", tmp.join("b")], { cwd: dir })
    expect(plain.stderr).not.toContain("\x1b[K")
    expect(plain.stderr).toContain('run "quickstart": 12 completed, 0 failed of 12')
  })

  test("an invalid job exits 2, lists every problem by key path, and creates nothing", async () => {
    await using tmp = await tmpdir()
    writeFileSync(
      tmp.join("job.toml"),
      `name = "bad"\n[source]\npath = "in.jsonl"\n[provider]\nname = "openai"\nmodle = "x"\n[request]\nprompt = 3\n`,
    )
    const out = await spool(["run", "job.toml"], { cwd: tmp.path })
    expect(out.code).toBe(2)
    // the missing model too: openai needs one, and it is listed with the rest, not one round later
    expect(out.stderr).toBe(
      [
        `spool: ${tmp.join("job.toml")}: the job is not valid`,
        "  × provider.model: missing (required): the model's name, or --model",
        "  × request.prompt: expected a string (the prompt template, with {{field}} placeholders)",
        '  × provider.modle: unknown key; did you mean "model"?',
        "  Fix the keys listed above; nothing was run.",
        "",
      ].join("\n"),
    )
    expect(existsSync(tmp.join(".spool"))).toBe(false)
  })

  test("spool run (watch, estimate) with no job file and no --input or --prompt says how to start", async () => {
    await using tmp = await tmpdir()
    for (const command of ["run", "watch", "estimate"]) {
      const out = await spool([command], { cwd: tmp.path })
      expect(out).toEqual({
        code: 2,
        stdout: "",
        stderr: [
          `spool: nothing to ${command}: give a job file, or the job as flags`,
          `  spool ${command} job.toml`,
          `  spool ${command} --input FILE --prompt "Label: {{field}}" --provider openai --model gpt-4.1-mini`,
          "  A job file to start from: examples/quickstart/job.toml in spool's source (the offline mock provider, no key).",
          `  Every flag: spool ${command} --help`,
          "",
        ].join("\n"),
      })
    }
    // with some of the job given, the keys it lacks are listed as usual
    const part = await spool(["run", "--prompt", "{{text}}"], { cwd: tmp.path })
    expect(part.stderr).toBe(
      [
        "spool: the flags: the job is not valid",
        "  × source: missing (required): a [source] table with a path, or --input",
        "  × provider.model: missing (required): the model's name, or --model",
        "  Fix the keys listed above; nothing was run.",
        "",
      ].join("\n"),
    )
    expect(existsSync(tmp.join(".spool"))).toBe(false)
  })

  test("a plugin's misspelt option is listed once; a built-in's gets the option it most likely meant", async () => {
    await using tmp = await tmpdir()
    writeFileSync(tmp.join("in.jsonl"), '{"text":"a"}\n')
    const plugin = join(import.meta.dir, "../../examples/plugins/http-endpoint/http-endpoint.ts")
    writeFileSync(
      tmp.join("job.toml"),
      `plugins = ["${plugin}"]\n[source]\npath = "in.jsonl"\n[provider]\nname = "http-endpoint"\n[provider.options]\nurl = "http://127.0.0.1:9/x"\nreplyfield = "a"\n[request]\nprompt = "{{text}}"\n`,
    )
    const out = await spool(["run", "job.toml"], { cwd: tmp.path })
    expect(out).toEqual({
      code: 2,
      stdout: "",
      stderr:
        "spool: the job is not valid\n  × provider.options.replyfield: unknown key (check its spelling)\n" +
        "  Fix the keys listed above; nothing was run.\n",
    })
    writeFileSync(
      tmp.join("job.toml"),
      `[source]\npath = "in.jsonl"\n[provider]\nname = "mock"\n[provider.options]\nlatncy_ms = 3\n[request]\nprompt = "{{text}}"\n`,
    )
    const builtin = await spool(["run", "job.toml"], { cwd: tmp.path })
    expect(builtin.code).toBe(2)
    expect(builtin.stderr).toContain(
      '  × provider.options.latncy_ms: unknown key; did you mean "latency_ms"?\n',
    )
    expect(existsSync(tmp.join(".spool"))).toBe(false)
  })

  test("a missing API key exits 2 naming the variable", async () => {
    await using tmp = await tmpdir()
    writeFileSync(tmp.join("in.jsonl"), '{"a":1}\n')
    const out = await spool(
      ["run", "--input", "in.jsonl", "--prompt", "{{a}}", "--model", "m", "--provider", "openai"],
      {
        cwd: tmp.path,
      },
    )
    expect(out.code).toBe(2)
    expect(out.stderr).toContain('OPENAI_API_KEY is not set: provider "openai" reads its API key from it')
    expect(existsSync(tmp.join(".spool"))).toBe(false)
  })

  test("an unknown flag and an unknown command exit 2", async () => {
    await using tmp = await tmpdir()
    const flag = await spool(["run", "--concurency", "3"], { cwd: tmp.path })
    expect(flag.code).toBe(2)
    expect(flag.stderr).toBe(
      "spool: unknown flag --concurency; did you mean --concurrency?\n  See `spool <command> --help`.\n",
    )
    const far = await spool(["run", "--quiet"], { cwd: tmp.path })
    expect(far.stderr).toBe("spool: unknown flag --quiet\n  See `spool <command> --help`.\n")
    const cmd = await spool(["rn"], { cwd: tmp.path })
    expect(cmd.code).toBe(2)
    expect(cmd.stderr).toContain('unknown command "rn"; did you mean "run"?')
  })

  test("every job key is a flag: --delimiter '\\t' and --rpm run; a numeric flag that is no number exits 2", async () => {
    await using tmp = await tmpdir()
    // sniffed, this header would split at ";" (3 fields to 2) and have no id column: only the tab flag reads it
    writeFileSync(tmp.join("t.csv"), "id\tsubject;topic;area\n1\thello;a;b\n2\tworld;c;d\n")
    const args = ["run", "--input", "t.csv", "--id", "id", "--prompt", "{{id}}", "--provider", "mock"]
    const ran = await spool([...args, "--delimiter", "\\t", "--rpm", "600", "--tpm", "100000"], {
      cwd: tmp.path,
    })
    expect(ran.code).toBe(0)
    expect(ran.stderr).toContain('run "t": 2 completed, 0 failed of 2')
    const results = await spool(["results"], { cwd: tmp.path })
    expect(idsOf(results.stdout)).toEqual(["1", "2"])
    const bad = await spool([...args, "--new-run", "--rpm", "fast"], { cwd: tmp.path })
    expect(bad).toEqual({ code: 2, stdout: "", stderr: 'spool: --rpm must be a number, not "fast"\n' })
  })

  test("a placeholder that no row has is caught before the run is created", async () => {
    await using tmp = await tmpdir()
    writeFileSync(tmp.join("in.jsonl"), '{"subject":"a"}\n{"subject":"b"}\n')
    const out = await spool(
      ["run", "--input", "in.jsonl", "--prompt", "{{subject}} {{body}}", "--provider", "mock"],
      {
        cwd: tmp.path,
      },
    )
    expect(out.code).toBe(2)
    expect(out.stderr).toContain(`request.prompt: {{body}} is in no row of ${tmp.join("in.jsonl")}`)
    expect(out.stderr).toContain("The rows have the fields: subject.")
    const runs = await spool(["runs", "--json"], { cwd: tmp.path })
    expect(JSON.parse(runs.stdout)).toEqual([])
  })

  test("an embedding job's input template is named as such when no row has its placeholder", async () => {
    await using tmp = await tmpdir()
    writeFileSync(tmp.join("in.jsonl"), '{"subject":"a"}\n')
    writeFileSync(
      tmp.join("job.toml"),
      'name = "e"\n[source]\npath = "in.jsonl"\n[provider]\nname = "mock"\n[request]\nkind = "embedding"\ninput = "{{body}}"\n',
    )
    const out = await spool(["run", "job.toml"], { cwd: tmp.path })
    expect(out.code).toBe(2)
    expect(out.stderr).toContain(`request.input: {{body}} is in no row of ${tmp.join("in.jsonl")}`)
    expect(out.stderr).toContain(
      "The rows have the fields: subject. Fix the input template or the input file.",
    )
  })

  test("a row without a placeholder's field fails that item only; the run exits 3", async () => {
    await using tmp = await tmpdir()
    writeFileSync(
      tmp.join("in.jsonl"),
      '{"subject":"a","body":"x"}\n{"subject":"b"}\n{"subject":"c","body":"z"}\n',
    )
    const out = await spool(
      ["run", "--input", "in.jsonl", "--prompt", "{{subject}} {{body}}", "--provider", "mock"],
      {
        cwd: tmp.path,
      },
    )
    expect(out.code).toBe(3)
    const failed = await spool(["results", "--state", "failed"], { cwd: tmp.path })
    expect(JSON.parse(failed.stdout)).toMatchObject({
      id: "2",
      state: "failed",
      output: null,
      error: { class: "template", message: 'the row has no field "body" for the prompt\'s placeholder' },
    })
  })

  test("malformed and duplicate lines are skipped and reported by line; the rest completes", async () => {
    await using tmp = await tmpdir()
    writeFileSync(
      tmp.join("in.jsonl"),
      [
        '{"id":"a","t":"1"}',
        "{not json",
        '{"id":"b","t":"2"}',
        "",
        "[1,2]",
        '{"id":"a","t":"dup"}',
        '{"id":"c","t":"3"}',
      ].join("\n") + "\n",
    )
    const out = await spool(
      ["run", "--input", "in.jsonl", "--id", "id", "--prompt", "{{t}}", "--provider", "mock"],
      {
        cwd: tmp.path,
      },
    )
    expect(out.code).toBe(0)
    expect(out.stderr).toContain("input lines skipped")
    const status = JSON.parse((await spool(["status", "--json"], { cwd: tmp.path })).stdout)
    expect(status.counts.completed).toBe(3)
    expect(status.malformed.count).toBe(3)
    expect(status.malformed.duplicates).toBe(1)
    expect(status.malformed.sample.map((p: { line: number }) => p.line)).toEqual([2, 5, 6])
    const text = await spool(["status"], { cwd: tmp.path })
    expect(text.stdout).toContain(`${tmp.join("in.jsonl")}:2  not valid JSON`)
  })

  test("results on stdout reach a slow reader whole: every line, nothing cut off at exit", async () => {
    await using tmp = await tmpdir()
    const n = 5000
    writeFileSync(
      tmp.join("in.jsonl"),
      Array.from({ length: n }, (_, i) =>
        JSON.stringify({ id: `r${i}`, t: `row ${i} ${"x".repeat(40)}` }),
      ).join("\n") + "\n",
    )
    const run = await spool(
      ["run", "--input", "in.jsonl", "--id", "id", "--prompt", "{{t}}", "--provider", "mock"],
      {
        cwd: tmp.path,
      },
    )
    expect(run.code).toBe(0)
    // the reader starts only after the writer has filled the pipe and could have exited
    const child = Bun.spawn(["sh", "-c", `"${BIN}" results | (sleep 1; cat)`], {
      cwd: tmp.path,
      env: { ...process.env, SPOOL_HOME: tmp.join(".spool") },
      stdout: "pipe",
      stderr: "pipe",
    })
    const [stdout, code] = await Promise.all([new Response(child.stdout).text(), child.exited])
    expect(code).toBe(0)
    expect(idsOf(stdout)).toEqual(Array.from({ length: n }, (_, i) => `r${i}`))
  })

  test("the same job resumes its run; a changed prompt is refused until --new-run", async () => {
    await using tmp = await tmpdir()
    writeFileSync(tmp.join("in.jsonl"), '{"t":"1"}\n{"t":"2"}\n')
    const args = [
      "run",
      "--input",
      "in.jsonl",
      "--prompt",
      "say {{t}}",
      "--provider",
      "mock",
      "--name",
      "same",
    ]
    expect((await spool(args, { cwd: tmp.path })).code).toBe(0)
    writeFileSync(tmp.join("in.jsonl"), '{"t":"1"}\n{"t":"2"}\n{"t":"3"}\n')
    const resumed = await spool(args, { cwd: tmp.path })
    expect(resumed.code).toBe(0)
    expect(resumed.stderr).toContain('run "same": 3 completed, 0 failed of 3')
    const shout = [...args.slice(0, 3), "--prompt", "shout {{t}}", ...args.slice(5)]
    const changed = await spool(shout, { cwd: tmp.path })
    expect(changed.code).toBe(2)
    expect(changed.stderr).toContain('run "same" was started with a different job')
    expect(changed.stderr).toContain("× request.prompt changed")
    expect(changed.stderr).toContain("--new-run")
    const fresh = await spool([...shout, "--new-run"], { cwd: tmp.path })
    expect(fresh.code).toBe(0)
    const runs = JSON.parse((await spool(["runs", "--json"], { cwd: tmp.path })).stdout)
    expect(
      runs.map((r: { name: string; state: string; total: number }) => [r.name, r.state, r.total]),
    ).toEqual([
      ["same", "completed", 3],
      ["same", "completed", 3],
    ])
  })

  test("an edited input under an unfinished run is refused with a way out", async () => {
    await using tmp = await tmpdir()
    writeFileSync(tmp.join("in.jsonl"), '{"t":"1"}\n{"t":"2"}\n')
    const args = ["run", "--input", "in.jsonl", "--prompt", "{{t}}", "--provider", "mock"]
    expect((await spool(args, { cwd: tmp.path })).code).toBe(0)
    writeFileSync(tmp.join("in.jsonl"), '{"t":"X"}\n{"t":"2"}\n')
    const out = await spool(args, { cwd: tmp.path })
    expect(out.code).toBe(2)
    expect(out.stderr).toContain(`${tmp.join("in.jsonl")} changed`)
    expect(out.stderr).toContain("--reingest")
  })

  test("a rejected API key pauses the run instead of failing every item", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({ apiKey: "sk-the-right-one" })
    writeFileSync(tmp.join("in.jsonl"), Array.from({ length: 50 }, (_, i) => `{"t":"${i}"}\n`).join(""))
    const args = [
      "run",
      "--input",
      "in.jsonl",
      "--prompt",
      "{{t}}",
      "--model",
      "m",
      "--base-url",
      fake.url,
      "--concurrency",
      "2",
    ]
    const out = await spool(args, { cwd: tmp.path, env: { OPENAI_API_KEY: "sk-wrong" } })
    expect(out.code).toBe(1)
    expect(out.stderr).toContain("paused: HTTP 401")
    expect(fake.requests).toBeLessThanOrEqual(2)
    const status = JSON.parse((await spool(["status", "--json"], { cwd: tmp.path })).stdout)
    expect(status.state).toBe("paused")
    expect(status.counts.failed).toBe(0)
    expect(status.counts.pending).toBe(50)
    const fixed = await spool(args, { cwd: tmp.path, env: { OPENAI_API_KEY: "sk-the-right-one" } })
    expect(fixed.code).toBe(0)
    expect(fake.paid.size).toBe(50)
  })

  test("reads the key from .env and the base URL from OPENAI_BASE_URL; the key never reaches the store, the logs or the results", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({
      apiKey: KEY,
      faults: { rate: 0.3, kinds: ["500", "429"], seed: 1, retryAfter: "0" },
    })
    writeFileSync(tmp.join("in.jsonl"), Array.from({ length: 30 }, (_, i) => `{"t":"${i}"}\n`).join(""))
    writeFileSync(tmp.join(".env"), `OPENAI_API_KEY=${KEY}\n`)
    const home = tmp.join("home")
    const out = await spool(
      ["run", "--input", "in.jsonl", "--prompt", "{{t}}", "--model", "m", "--home", home, "--verbose"],
      { cwd: tmp.path, env: { OPENAI_BASE_URL: fake.url } },
    )
    expect(out.code).toBe(0)
    expect(fake.paid.size).toBe(30)
    const results = await spool(["results", "--home", home, "--out", tmp.join("r.jsonl")], { cwd: tmp.path })
    expect(results.code).toBe(0)
    const files = [...walk(home), tmp.join("r.jsonl")]
    expect(files.some((f) => f.endsWith("spool.log"))).toBe(true)
    for (const file of files) expect(readFileSync(file).includes(KEY)).toBe(false)
    expect(out.stderr.includes(KEY)).toBe(false)
  })

  test("spend: cost per result and in status from the built-in prices or the job's [pricing]; unknown stays unknown", async () => {
    await using tmp = await tmpdir()
    writeFileSync(
      tmp.join("in.jsonl"),
      Array.from({ length: 40 }, (_, i) => `{"t":"ticket number ${i}"}\n`).join(""),
    )
    const run = (name: string, extra: string[]) =>
      spool(
        ["run", "--input", "in.jsonl", "--prompt", "{{t}}", "--provider", "mock", "--name", name, ...extra],
        {
          cwd: tmp.path,
        },
      )
    expect((await run("priced", ["--model", "gpt-4.1-mini"])).code).toBe(0)
    const lines = (await spool(["results", "priced"], { cwd: tmp.path })).stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l))
    expect(lines.length).toBe(40)
    let total = 0
    for (const l of lines) {
      const expected = (l.usage.input_tokens * 0.4 + l.usage.output_tokens * 1.6) / 1e6
      expect(l.cost_usd).toBeCloseTo(expected, 6)
      total += expected
    }
    const view = JSON.parse((await spool(["status", "priced", "--json"], { cwd: tmp.path })).stdout)
    expect(view.spend.usd).toBeCloseTo(total, 6)
    expect(view.spend.prices.source).toContain("gpt-4.1-mini")
    const text = (await spool(["status", "priced"], { cwd: tmp.path })).stdout
    expect(text).toContain(`spend     $${total.toFixed(4)} so far (built-in prices for gpt-4.1-mini`)

    writeFileSync(
      tmp.join("job.toml"),
      `name = "own"\n[source]\npath = "in.jsonl"\n[provider]\nname = "mock"\nmodel = "llama3.2"\n[request]\nprompt = "{{t}}"\n[pricing]\ninput = 1\noutput = 2\n`,
    )
    expect((await spool(["run", "job.toml"], { cwd: tmp.path })).code).toBe(0)
    const own = JSON.parse((await spool(["status", "own", "--json"], { cwd: tmp.path })).stdout)
    expect(own.spend.usd).toBeCloseTo((own.usage.input_tokens * 1 + own.usage.output_tokens * 2) / 1e6, 6)
    expect(own.spend.prices.source).toBe("the job's [pricing]")

    expect((await run("unpriced", ["--model", "llama3.2"])).code).toBe(0)
    const unknown = JSON.parse((await spool(["status", "unpriced", "--json"], { cwd: tmp.path })).stdout)
    expect(unknown.spend).toEqual({ usd: null, remaining_usd: null, prices: null })
    expect((await spool(["status", "unpriced"], { cwd: tmp.path })).stdout).toContain(
      "spend     unknown (no price",
    )
  })

  test("results to a reader that stops early (| head -1): exit 0, no error printed", async () => {
    await using tmp = await tmpdir()
    writeFileSync(
      tmp.join("in.jsonl"),
      Array.from({ length: 3000 }, (_, i) => `{"t":"${"x".repeat(60)}${i}"}`).join("\n"),
    )
    expect(
      (
        await spool(
          ["run", "--input", "in.jsonl", "--prompt", "{{t}}", "--provider", "mock", "--concurrency", "64"],
          { cwd: tmp.path },
        )
      ).code,
    ).toBe(0)
    const child = start(["results"], { cwd: tmp.path })
    const reader = child.stdout.getReader()
    const first = await reader.read()
    expect(new TextDecoder().decode(first.value).startsWith('{"id":"1"')).toBe(true)
    await reader.cancel()
    expect(await child.exited).toBe(0)
    expect(await new Response(child.stderr).text()).toBe("")
  })

  test("results --out with 3,000 items writes them all and says so in one line, no MaxListenersExceededWarning", async () => {
    await using tmp = await tmpdir()
    const n = 3000
    writeFileSync(
      tmp.join("in.jsonl"),
      Array.from({ length: n }, (_, i) => `{"id":"r${i}","t":"${"x".repeat(60)}"}\n`).join(""),
    )
    const args = ["run", "--input", "in.jsonl", "--id", "id", "--prompt", "{{t}}", "--provider", "mock"]
    expect((await spool([...args, "--concurrency", "64"], { cwd: tmp.path })).code).toBe(0)
    const out = await spool(["results", "--out", "r.jsonl"], { cwd: tmp.path })
    expect({ code: out.code, stdout: out.stdout, stderr: out.stderr }).toEqual({
      code: 0,
      stdout: "",
      stderr: "wrote 3,000 results to r.jsonl\n",
    })
    expect(idsOf(readFileSync(tmp.join("r.jsonl"), "utf8"))).toEqual(
      Array.from({ length: n }, (_, i) => `r${i}`),
    )
    // the path as it was given; one result is one, none is none
    mkdirSync(tmp.join("sub"))
    const none = await spool(["results", "--state", "failed", "--out", "./sub/../f.jsonl"], { cwd: tmp.path })
    expect(none.stderr).toBe("wrote 0 results to ./sub/../f.jsonl\n")
    expect(readFileSync(tmp.join("f.jsonl"), "utf8")).toBe("")
    writeFileSync(tmp.join("one.jsonl"), '{"id":"only","t":"x"}\n')
    const single = ["run", "--input", "one.jsonl", "--id", "id", "--prompt", "{{t}}", "--provider", "mock"]
    expect((await spool(single, { cwd: tmp.path })).code).toBe(0)
    const one = await spool(["results", "one", "--out", tmp.join("o.jsonl")], { cwd: tmp.path })
    expect(one.stderr).toBe(`wrote 1 result to ${tmp.join("o.jsonl")}\n`)
  })

  test("the run's summary counts failed and need-review items apart", async () => {
    await using tmp = await tmpdir()
    // two answers pass the schema, one does not (needs review), one row cannot fill the prompt (failed)
    const rows = [{ text: "bug" }, { text: "spam" }, {}, { text: "billing" }]
    writeFileSync(tmp.join("in.jsonl"), rows.map((r) => JSON.stringify(r)).join("\n") + "\n")
    writeFileSync(
      tmp.join("label.json"),
      JSON.stringify({
        type: "object",
        properties: { label: { type: "string", enum: ["billing", "bug"] } },
        required: ["label"],
        additionalProperties: false,
      }),
    )
    writeFileSync(
      tmp.join("job.toml"),
      `name = "mixed"\n[source]\npath = "in.jsonl"\n[provider]\nname = "mock"\n[provider.options]\nreply = '{"label":"{{prompt}}"}'\n[request]\nprompt = "{{text}}"\n[output]\nschema = "label.json"\n[limits]\nmax_attempts = 1\n`,
    )
    const run = await spool(["run", "job.toml"], { cwd: tmp.path })
    expect(run.code).toBe(3)
    expect(run.stderr.trim().split("\n").slice(-2)).toEqual([
      'run "mixed": 2 completed, 1 failed, 1 need review of 4 — `spool results mixed` for the outputs',
      "1 item(s) wait for review: spool review mixed (approve, edit or reject them)",
    ])
  })
})

describe("a job with [[step]] tables, through dist/spool", () => {
  const job = (url: string, when: string) => `name = "triage"
[source]
path = "in.jsonl"
[provider]
name = "openai-compatible"
model = "m"
base_url = "${url}"
[request]
prompt = "Classify: {{text}}"
[[step]]
name = "classify"
output.schema = { type = "object", properties = { label = { type = "string" } } }
[[step]]
name = "summary"
needs = ["classify"]
when = "${when}"
request = { prompt = "Summarise the {{classify.label}}: {{text}}" }
`

  test("a when that does not parse, or reads a field classify has not, fails before any call: exit 2, the step and column named, no store", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({})
    writeFileSync(tmp.join("in.jsonl"), '{"text":"it crashes"}\n')
    const cases: [string, string][] = [
      ["classify.label = 'bug'", `  × step.summary.when: "=" is written "==" here at column 16`],
      [
        "classify.labels == 'bug'",
        `  × step.summary.when: column 1: classify has no field "labels" (its schema has: label)`,
      ],
    ]
    for (const [when, line] of cases) {
      writeFileSync(tmp.join("job.toml"), job(fake.url, when))
      const out = await spool(["run", "job.toml"], { cwd: tmp.path, env: { OPENAI_API_KEY: "sk-x" } })
      expect(out.code).toBe(2)
      expect(out.stderr.split("\n")).toContain(line)
    }
    expect(fake.requests).toBe(0)
    expect(existsSync(tmp.join(".spool"))).toBe(false)
  })

  test("--rerun-from on a job without steps, or naming no step, is refused before anything is opened", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({})
    writeFileSync(tmp.join("in.jsonl"), '{"text":"it crashes"}\n')
    writeFileSync(tmp.join("job.toml"), job(fake.url, "classify.label == 'bug'"))
    const out = await spool(["run", "job.toml", "--rerun-from", "sumary"], {
      cwd: tmp.path,
      env: { OPENAI_API_KEY: "sk-x" },
    })
    expect(out.code).toBe(2)
    expect(out.stderr).toContain('--rerun-from: no step is named "sumary"')
    expect(out.stderr).toContain("The steps: classify, summary.")
    expect(fake.requests).toBe(0)
    expect(existsSync(tmp.join(".spool"))).toBe(false)
  })
})

describe("the install story", () => {
  const ROOT = join(import.meta.dir, "../..")
  const INSTALL = "mkdir -p ~/.local/bin && install -m 755 dist/spool ~/.local/bin/spool"

  test("the README's commands say `spool`, and it says once how dist/spool gets on the PATH", () => {
    const readme = readFileSync(join(ROOT, "README.md"), "utf8")
    const blocks = [...readme.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1] as string)
    const commands = blocks.flatMap((b) => b.split("\n")).map((l) => l.trim())
    expect(commands.filter((l) => /^(\.\.\/)*dist\/spool\b/.test(l))).toEqual([])
    expect(commands.filter((l) => l.startsWith("spool ")).length).toBeGreaterThan(5)
    expect(commands.filter((l) => l.startsWith(INSTALL)).length).toBe(1)
    expect(readme).toContain("After setup the program is `dist/spool`")
  })

  /** scripts/setup.sh in a copy of the tree whose bun is a stand-in that builds nothing: only its last words count. */
  async function setup(cwd: (tree: string) => string) {
    await using tmp = await tmpdir()
    const tree = tmp.join("my spool")
    mkdirSync(join(tree, "scripts"), { recursive: true })
    mkdirSync(join(tree, ".tools/node_modules/.bin"), { recursive: true })
    copyFileSync(join(ROOT, "scripts/setup.sh"), join(tree, "scripts/setup.sh"))
    const bun = join(tree, ".tools/node_modules/.bin/bun")
    writeFileSync(bun, '#!/bin/sh\nif [ "$1" = "--version" ]; then echo 1.4.5; fi\n', { mode: 0o755 })
    const home = tmp.join("home")
    mkdirSync(home)
    const ran = Bun.spawnSync(["bash", join(tree, "scripts/setup.sh"), "--no-quickstart"], {
      cwd: cwd(tree),
      env: { ...process.env, HOME: home },
      stdout: "pipe",
      stderr: "pipe",
    })
    const stderr = ran.stderr.toString()
    return { code: ran.exitCode, stdout: ran.stdout.toString(), stderr, tree, home: readdirSync(home) }
  }

  test("scripts/setup.sh ends by printing the install line, and installs nothing itself", async () => {
    const here = await setup((tree) => tree)
    expect(here.code).toBe(0)
    expect(here.stdout).toBe("")
    expect(here.home).toEqual([])
    expect(here.stderr).toBe(
      "\ndist/spool is built: one file, nothing else needed. Put it on your PATH as `spool` (the README's examples say `spool`):\n" +
        `  ${INSTALL}\n`,
    )
    // run from elsewhere, the line names the binary by its whole path (quoted for the shell)
    const away = await setup((tree) => dirname(tree))
    expect(away.stderr.trim().split("\n").at(-1)).toBe(
      `  mkdir -p ~/.local/bin && install -m 755 ${away.tree.replace(" ", "\\ ")}/dist/spool ~/.local/bin/spool`,
    )
  })
})

describe("terminal manners", () => {
  test("--help is coloured on a terminal or with FORCE_COLOR, never into a pipe or with NO_COLOR", async () => {
    await using tmp = await tmpdir()
    // the test's own colour settings left out, whatever they are
    const { NO_COLOR: _no, FORCE_COLOR: _force, CI: _ci, ...clean } = process.env as Record<string, string>
    const help = async (env: Record<string, string>, args = ["--help"]) => {
      const child = Bun.spawn([BIN, ...args], {
        cwd: tmp.path,
        env: { ...clean, TERM: "xterm", ...env },
        stdout: "pipe",
        stderr: "pipe",
      })
      return { stdout: await new Response(child.stdout).text(), code: await child.exited }
    }
    const hasColour = (text: string) => text.includes("\x1b[")
    for (const args of [["--help"], ["run", "--help"], ["status", "-h"]]) {
      const piped = await help({}, args)
      expect(piped.code).toBe(0)
      expect(piped.stdout).toContain("USAGE spool")
      expect(hasColour(piped.stdout)).toBe(false)
      // and no line ends in the spaces citty pads its columns with
      expect(piped.stdout.split("\n").filter((l) => l.endsWith(" "))).toEqual([])
      const forced = await help({ FORCE_COLOR: "1" }, args)
      expect(hasColour(forced.stdout)).toBe(true)
      expect(forced.stdout.replace(/\x1b\[[0-9;]*m/g, "")).toBe(piped.stdout)
    }
    expect(hasColour((await help({ FORCE_COLOR: "1", NO_COLOR: "1" })).stdout)).toBe(false)
    expect(hasColour((await help({ FORCE_COLOR: "0" })).stdout)).toBe(false)
    // citty alone colours into a pipe; and it would not colour under CI even when forced: spool decides, not citty
    expect(hasColour((await help({ FORCE_COLOR: "1", CI: "true" })).stdout)).toBe(true)
    // a terminal (script(1) gives one), and a terminal with NO_COLOR of any value
    const tty = (env: string) =>
      Bun.spawnSync(["script", "-qec", `env ${env} ${BIN} --help`, "/dev/null"], {
        cwd: tmp.path,
        env: { ...clean, TERM: "xterm" },
      }).stdout.toString()
    expect(tty("TERM=xterm")).toContain("\x1b[1;4mCOMMANDS\x1b[0m")
    expect(hasColour(tty("NO_COLOR=yes"))).toBe(false)
    expect(hasColour(tty("TERM=dumb"))).toBe(false)
  })

  test("the commands that read or act on runs, in a folder with no store, say so and make none", async () => {
    await using tmp = await tmpdir()
    const commands = [
      ["status"],
      ["status", "--json"],
      ["runs"],
      ["results"],
      ["results", "--out", "r.jsonl"],
      ["serve", "--port", "0"],
      ["pause"],
      ["resume"],
      ["cancel"],
      ["retry"],
      ["export", "--dir", "bundle"],
      ["prune"],
    ]
    for (const args of commands) {
      // with the default ./.spool, as a person's shell has it (the helper sets SPOOL_HOME)
      const { SPOOL_HOME: _home, ...env } = process.env
      const child = Bun.spawn([BIN, ...args], { cwd: tmp.path, env, stdout: "pipe", stderr: "pipe" })
      const [stdout, stderr, code] = await Promise.all([
        new Response(child.stdout).text(),
        new Response(child.stderr).text(),
        child.exited,
      ])
      expect({ args, code, stdout, stderr }).toEqual({
        args,
        code: 2,
        stdout: "",
        stderr:
          "spool: no spool store in ./.spool — start a run with `spool run job.toml`\n" +
          "  Or point --home (or SPOOL_HOME) at the folder that holds one.\n",
      })
    }
    const elsewhere = await spool(["status", "--home", "somewhere"], { cwd: tmp.path })
    expect(elsewhere.stderr.split("\n")[0]).toBe(
      "spool: no spool store in somewhere — start a run with `spool run job.toml`",
    )
    expect(readdirSync(tmp.path)).toEqual([])
    // estimate and plugins never need one, and make none either
    expect((await spool(["plugins"], { cwd: tmp.path })).code).toBe(0)
    expect(readdirSync(tmp.path)).toEqual([])
  })
})
