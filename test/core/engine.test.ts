import { describe, expect, test } from "bun:test"
import { writeFileSync } from "node:fs"
import * as engine from "../../src/core/engine.ts"
import * as store from "../../src/core/store.ts"
import { startFake } from "../lib/fake-openai.ts"
import { tmpdir } from "../lib/tmp.ts"

const KEY = "sk-test-engine-0123456789"

function lines(n: number, row: (i: number) => Record<string, unknown>): string {
  return Array.from({ length: n }, (_, i) => JSON.stringify(row(i + 1))).join("\n") + "\n"
}

describe("the engine, realtime, against the fake OpenAI server", () => {
  test("1,000 items with 20% faults all complete with the right output, every attempt recorded, none paid twice", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFake({
      apiKey: KEY,
      faults: {
        rate: 0.2,
        kinds: ["429", "500", "503", "hang", "reset", "garbage"],
        seed: 7,
        retryAfter: "0",
      },
    })
    process.env.OPENAI_API_KEY = KEY
    writeFileSync(
      tmp.join("in.jsonl"),
      lines(1000, (i) => ({ id: `q${i}`, text: `question ${i}` })),
    )
    writeFileSync(
      tmp.join("job.toml"),
      `name = "faults"
[source]
path = "in.jsonl"
id = "id"
[provider]
name = "openai"
model = "gpt-4.1-mini"
base_url = "${fake.url}"
[request]
system = "Answer briefly."
prompt = "Q: {{text}}"
max_tokens = 20
[limits]
concurrency = 32
max_attempts = 10
timeout_s = 0.5
retry_base_s = 0.01
retry_cap_s = 0.05
`,
    )
    const home = tmp.join(".spool")
    const session = await engine.prepare({
      file: tmp.join("job.toml"),
      flags: {},
      home,
      newRun: false,
      reingest: false,
      resume: "spool run job.toml",
    })
    expect(await session.execute()).toBe(0)

    const db = store.open(home)
    const run = db.latestRun("faults")!
    expect(run.state).toBe("completed")
    const items = [...db.items(run.id)]
    expect(items.length).toBe(1000)
    for (const [i, item] of items.entries()) {
      expect(item.key).toBe(`q${i + 1}`)
      expect(item.state).toBe("completed")
      expect(item.output).toBe(`echo: Q: question ${i + 1}`)
      expect(fake.paid.get(`Q: question ${i + 1}`)).toBe(1)
    }
    const attempts = db.db.query<{ n: number }, []>("SELECT count(*) AS n FROM attempts").get()!.n
    const faulted = db.db
      .query<{ n: number }, []>("SELECT count(*) AS n FROM attempts WHERE outcome = 'retry'")
      .get()!.n
    expect(attempts).toBe(fake.requests)
    expect(faulted).toBe(fake.requests - 1000)
    expect(faulted).toBeGreaterThan(150)
    const classes = db
      .summary(run.id)
      .errors.map((e) => e.class)
      .sort()
    expect(classes).toEqual(["bad_response", "network", "rate_limit", "server", "timeout"])
    expect(fake.invalid).toEqual([])
    expect(db.integrity()).toBe("ok")
    db.close()
  })
})
