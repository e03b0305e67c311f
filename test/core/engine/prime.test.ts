/**
 * Priming (engine/prime.ts) against the fake Anthropic API and a real SQLite ledger: a prefix is primed before its
 * batch unless it was primed less than 80% of its lifetime ago (by this process or an earlier one: the ledger says),
 * so a long job re-primes as the lifetime would lapse; a priming call that fails is recorded and costs nothing.
 */
import { describe, expect, test } from "bun:test"
import { writeFileSync } from "node:fs"
import { Primer } from "../../../src/core/engine/prime.ts"
import { client } from "../../../src/core/engine/run.ts"
import * as jobs from "../../../src/core/job/job.ts"
import { open } from "../../../src/core/ledger/open.ts"
import type { Request } from "../../../src/plugins/api/define.ts"
import { startFakeAnthropic } from "../../lib/fake-anthropic.ts"
import { tmpdir } from "../../lib/tmp.ts"

const SYSTEM = "Label tickets. ".repeat(400) // 6,000 characters: ~1,500 tokens, above Sonnet 4.5's 1,024
const TTL = 5 * 60_000

/** A request of the batch, as packing keeps one per prefix. */
const request = (key: string): Request => ({
  system: SYSTEM,
  prompt: "Ticket 1: hello",
  max_tokens: 50,
  cache: { prefix: 0, ttl: "5m", key, mark: true },
})

describe("priming", () => {
  test("a prefix is primed unless primed within 80% of its lifetime; each call is recorded with its tokens", async () => {
    await using tmp = await tmpdir()
    await using fake = await startFakeAnthropic({ apiKey: "sk-ant-prime" })
    process.env.ANTHROPIC_API_KEY = "sk-ant-prime"
    writeFileSync(tmp.join("in.jsonl"), "")
    writeFileSync(
      tmp.join("job.toml"),
      `name = "p"\n[source]\npath = "in.jsonl"\n[provider]\nname = "anthropic"\nmodel = "claude-sonnet-4-5"\nmode = "batch"\nbase_url = "${fake.url}"\n[request]\nsystem = "x"\nprompt = "{{t}}"\n`,
    )
    const { job } = jobs.load(tmp.join("job.toml"), {})
    const db = await open(tmp.join(".spool"))
    try {
      const { run } = await db.runs.create({ name: "p", job, fingerprint: "f", resume: "", inputs: [] })
      const primer = new Primer({ ledger: db, run, owner: "me", client: client(job), ttlMs: TTL })
      const signal = new AbortController().signal
      // an earlier process primed "old" 4.5 minutes ago (past 80% of 5) and "fresh" 1 minute ago
      const earlier = { batch: null, owner: "before", outcome: "ok" as const, latencyMs: 5 }
      const tokens = { inputTokens: 1500, outputTokens: 1, cachedTokens: 0, writeTokens: 1500 }
      const old = Date.now() - 270_000
      const fresh = Date.now() - 60_000
      await db.primes.record(run.id, { ...earlier, ...tokens, prefix: "old", startedAt: old, endedAt: old })
      await db.primes.record(run.id, {
        ...earlier,
        ...tokens,
        prefix: "fresh",
        startedAt: fresh,
        endedAt: fresh,
      })
      primer.note(
        1,
        new Map([
          ["old", request("old")],
          ["fresh", request("fresh")],
          ["new", request("new")],
        ]),
      )
      await primer.prime(1, signal)
      // "old" and "new" were sent, "fresh" was not: one token of answer each, the prefix and a short question
      const sent = fake.bodies.filter((b) => b.max_tokens === 1)
      expect(sent).toHaveLength(2)
      expect(sent[0]!.system).toEqual([{ type: "text", text: SYSTEM, cache_control: { type: "ephemeral" } }])
      expect(sent[0]!.messages).toEqual([{ role: "user", content: "Reply with OK." }])
      // both write the same prefix at the fake: the first writes it, the second reads it
      expect(fake.cached()).toMatchObject({ writes: 1, reads: 1 })
      expect((await db.primes.last(run.id, "new"))!).toBeGreaterThan(fresh)
      expect((await db.primes.last(run.id, "old"))!).toBeGreaterThan(old)
      expect(await db.primes.last(run.id, "fresh")).toBe(fresh)
      const s = await db.reads.summary(run.id)
      expect([s.primes.count, s.primes.failed]).toEqual([4, 0])
      // a batch this process did not pack (or one primed already) is created unprimed: nothing is sent
      await primer.prime(1, signal)
      await primer.prime(2, signal)
      expect(fake.bodies.filter((b) => b.max_tokens === 1)).toHaveLength(2)
      // a priming call that fails is recorded, with no tokens, and does not stop the batch
      fake.faults = { rate: 1, kinds: ["500"] }
      primer.note(3, new Map([["down", request("down")]]))
      await primer.prime(3, signal)
      const after = await db.reads.summary(run.id)
      expect([after.primes.count, after.primes.failed, after.primes.inputTokens]).toEqual([
        5,
        1,
        s.primes.inputTokens,
      ])
      expect(await db.primes.last(run.id, "down")).toBeNull()
    } finally {
      await db.close()
    }
  })
})
