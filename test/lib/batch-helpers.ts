/**
 * What the tests of the batch clients share (test/plugins/openai-batch.test.ts, test/plugins/anthropic-batch.test.ts):
 * reading errors and lines, writing request files, submitting, downloading, and the checks that are the same for
 * every provider.
 */
import { expect } from "bun:test"
import { stat } from "node:fs/promises"
import { ProviderError, type ErrorClass } from "../../src/plugins/api/errors.ts"
import type { BatchClient, BatchLine, BatchTag, RemoteBatch, Request } from "../../src/plugins/api/define.ts"
import type { BatchOptions } from "./fake-batch.ts"
import { tmpdir, type Tmp } from "./tmp.ts"

/** The tag of the batch a test makes, unless it makes several: its custom_ids are `${TAG}_${k}`. */
export const TAG = "r1-b0001"

/** The tag of the `n`th batch: r1-b0000, r1-b0001, … */
export const tagNo = (n: number) => `r1-b${String(n).padStart(4, "0")}`

/** A signal that never aborts. */
export const never = () => new AbortController().signal

/** Tokens as the fakes count them: a quarter of the characters, rounded up, at least 1. */
export const tokens = (text: string) => Math.max(1, Math.ceil(text.length / 4))

/** The item number k of a custom_id `${TAG}_${k}`. */
export const itemOf = (customId: string) => Number(customId.slice(TAG.length + 1))

/** The custom_ids of TAG's items `ks`. */
export const customIds = (ks: Iterable<number>) => Array.from(ks, (k) => `${TAG}_${k}`)

/** The fields of a ProviderError the runner reads. */
export function fields(e: ProviderError | undefined) {
  if (!e) return undefined
  expect(e).toBeInstanceOf(ProviderError)
  return {
    class: e.errorClass,
    retryable: e.retryable,
    pause: e.pause,
    status: e.status,
    message: e.message,
    queueLimit: e.queueLimit,
  }
}

/** The `fields` an error is expected to have: not retryable, not pausing, no status and no queue limit unless given. */
export function errorFields(
  cls: ErrorClass,
  message: string,
  more: {
    retryable?: boolean
    pause?: boolean
    status?: number
    queueLimit?: ProviderError["queueLimit"]
  } = {},
): ReturnType<typeof fields> {
  return {
    class: cls,
    retryable: more.retryable ?? false,
    pause: more.pause ?? false,
    status: more.status,
    message,
    queueLimit: more.queueLimit,
  }
}

/** A parsed line with its error reduced to the fields the runner reads. */
export function read(line: BatchLine) {
  return {
    customId: line.customId,
    reply: line.reply,
    error: fields(line.error),
    kind: line.kind,
    keys: Object.keys(line).sort(),
  }
}

/** The keys of a line: `base`, and kind when the provider gives one. */
const keysOf = (base: string[], kind: string | undefined) => (kind ? [...base, "kind"].sort() : base)

/** What `read` gives for a line with an answer, of the provider's `kind` (Anthropic "succeeded"; OpenAI none). */
export const answerLine = (customId: string, reply: BatchLine["reply"], kind?: string) => ({
  customId,
  reply,
  error: undefined,
  kind,
  keys: keysOf(["customId", "reply"], kind),
})

/** What `read` gives for a line with an error (its fields as `errorFields` gives them), of the provider's `kind`. */
export const errorLine = (customId: string, error: ReturnType<typeof fields>, kind?: string) => ({
  customId,
  reply: undefined,
  error,
  kind,
  keys: keysOf(["customId", "error"], kind),
})

/** What `read` gives for a line that is neither an answer nor an error (its request never ran), of `kind`. */
export const unrunLine = (customId: string, kind?: string) => ({
  customId,
  reply: undefined,
  error: undefined,
  kind,
  keys: keysOf(["customId"], kind),
})

/** What a call throws, which it must. */
export async function caught(run: () => Promise<unknown>): Promise<unknown> {
  try {
    await run()
  } catch (e) {
    return e
  }
  throw new Error("it did not throw")
}

/** What a call throws: the fields of its ProviderError (anything else it throws is thrown on). */
export async function thrown(run: () => Promise<unknown>) {
  const e = await caught(run)
  if (!(e instanceof ProviderError)) throw e
  return fields(e)
}

/** A call to an address where no server listens fails as a retryable network error. */
export async function expectConnectionFailed(run: () => Promise<unknown>): Promise<void> {
  const down = await thrown(run)
  expect([down?.class, down?.retryable, down?.message.startsWith("connection failed: ")]).toEqual([
    "network",
    true,
    true,
  ])
}

/** A call given a signal its caller has aborted throws the caller's own reason. */
export async function expectCallersAbort(run: (signal: AbortSignal) => Promise<unknown>): Promise<void> {
  const controller = new AbortController()
  const reason = new Error("stopped by the caller")
  controller.abort(reason)
  expect(await caught(() => run(controller.signal))).toBe(reason)
}

/** A batch's tag in run "r": `count` requests, its intent committed at `since`. */
export const tagOf = (count: number, since = Date.now(), tag = TAG): BatchTag => ({
  tag,
  run: "r",
  count,
  since,
})

/**
 * Writes the request file of `tag` to tmp's requests.jsonl, one line for each of its `count` items (custom_id
 * `${tag}_${k}`, prompt "item k" on top of `base`), and creates the batch of it.
 */
export async function submit(
  c: BatchClient,
  tmp: Tmp,
  tag: BatchTag,
  base: Omit<Request, "prompt"> = {},
): Promise<RemoteBatch> {
  const lines = Array.from({ length: tag.count }, (_, k) =>
    c.line(`${tag.tag}_${k}`, { ...base, prompt: `item ${k}` }),
  )
  await Bun.write(tmp.join("requests.jsonl"), lines.join("\n") + "\n")
  return c.create(tmp.join("requests.jsonl"), tag, never())
}

/** Retrieves the batch until it has ended. */
export async function untilEnded(c: BatchClient, batch: RemoteBatch): Promise<RemoteBatch> {
  while (batch.phase !== "ended") batch = await c.retrieve(batch.id, never())
  return batch
}

/** Where a test downloads a batch's files: out.jsonl and err.jsonl in tmp. */
export const outputs = (tmp: Tmp) => ({ output: tmp.join("out.jsonl"), errors: tmp.join("err.jsonl") })

/** The permission bits of a file. */
export const modeOf = async (path: string) => (await stat(path)).mode & 0o777

/** Every line of a downloaded file, parsed. */
export async function lines(c: BatchClient, path: string): Promise<BatchLine[]> {
  const text = await Bun.file(path).text()
  return text
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => c.parse(l))
}

/**
 * Downloads an ended batch that has an output file and no error file from a fake to tmp's out.jsonl: it alone is
 * written, with mode 0600 and no .part left behind, and no length was announced (the fakes stream their result
 * files, and Bun sends a body of 256 bytes or more so chunked, without a Content-Length). Returns its lines, parsed.
 */
export async function downloadOutput(c: BatchClient, batch: RemoteBatch, tmp: Tmp): Promise<BatchLine[]> {
  const written = await c.download(batch, outputs(tmp), never())
  expect(written).toEqual({ output: tmp.join("out.jsonl"), announced: {} })
  expect(await modeOf(tmp.join("out.jsonl"))).toBe(0o600)
  expect(await Bun.file(tmp.join("out.jsonl.part")).exists()).toBe(false)
  expect(await Bun.file(tmp.join("err.jsonl")).exists()).toBe(false)
  return lines(c, tmp.join("out.jsonl"))
}

/** Results come in another order than the requests went in, and every request has exactly one. */
export function expectShuffled(ids: string[], requested: string[]): void {
  expect(ids).not.toEqual(requested)
  expect(ids.slice().sort()).toEqual(requested.slice().sort())
}

/** A clock a test moves by hand (`t`, in ms), for a fake's `now`. */
export function handClock() {
  const clock = { t: Date.now(), now: () => clock.t }
  return clock
}

/** A fake's batch options for `cancelPartWay`: a batch processes for 10 s, and stays cancelling for 5 s. */
export const SLOW_CANCEL: BatchOptions = { processingMs: 10_000, cancelMs: 5_000 }

/**
 * On a fake with SLOW_CANCEL on `clock`: a batch of 10 items (over `base`) has `done` of them done `ranMs` after its
 * create, and is still in progress (in the provider's words `running`, default status and phase "in_progress"); a
 * cancel then answers cancelling (the provider's own word for it: `word`), or, for a provider with no cancelling state
 * (`ends`), the batch ended as cancelled (its status word then `word`); 5 s later the batch is retrieved again.
 * Returns the batch created, and as it was then.
 */
export async function cancelPartWay(
  c: BatchClient,
  tmp: Tmp,
  clock: { t: number },
  at: {
    ranMs: number
    done: number
    word: string
    running?: { status: string; phase: RemoteBatch["phase"] }
    ends?: boolean
  },
  base: Omit<Request, "prompt"> = {},
): Promise<{ created: RemoteBatch; ended: RemoteBatch }> {
  const created = await submit(c, tmp, tagOf(10, clock.t), base)
  clock.t += at.ranMs
  const running = at.running ?? { status: "in_progress", phase: "in_progress" }
  expect(await c.retrieve(created.id, never())).toEqual({
    id: created.id,
    status: running.status,
    phase: running.phase,
    counts: { total: 10, done: at.done, failed: 0 },
    createdAt: created.createdAt,
  })
  const cancelling = await c.cancel(created.id, never())
  expect([cancelling.status, cancelling.phase, cancelling.outcome]).toEqual(
    at.ends ? [at.word, "ended", "cancelled"] : [at.word, "cancelling", undefined],
  )
  clock.t += 5_000
  return { created, ended: await c.retrieve(created.id, never()) }
}

/**
 * A fake's batch options under which its first batch expires half-way, its items 1 and 2 failing with the HTTP
 * statuses `one` and `two` (`expectHalfRun` checks its lines). Its lines run in request order, so that items 1 and
 * 2 are among those run: a batch of 20 has items 0 to 9 run (8 succeeded, 2 errored) and 10 to 19 expired.
 */
export const halfExpired = (one: number, two: number): BatchOptions => ({
  script: [
    {
      end: { outcome: "expired", after: 0.5 },
      shuffle: false,
      lineError: (customId) =>
        customId.endsWith("_1") ? { status: one } : customId.endsWith("_2") ? { status: two } : undefined,
    },
  ],
})

/**
 * The lines of a batch the fake expired half-way (`b`, its record): a line it never reached is neither an answer nor
 * an error (of the provider's kind `unrun`, if it gives kinds); items 1 and 2 carry the errors `errors` gives (as
 * `fields`); `answered` checks any other line, and there are as many answers as the fake counted.
 */
export function expectHalfRun(
  all: BatchLine[],
  b: { order: Uint32Array; done: number; succeeded: number },
  errors: Record<1 | 2, ReturnType<typeof fields>>,
  answered: (line: BatchLine, k: number) => void,
  unrun?: string,
): void {
  const processed = new Set(customIds(b.order.slice(0, b.done)))
  expect(processed.size).toBe(10)
  // else the errors would go unchecked
  expect([processed.has(`${TAG}_1`), processed.has(`${TAG}_2`)]).toEqual([true, true])
  expect(all.filter((l) => l.error).length).toBe(2)
  for (const line of all) {
    const k = itemOf(line.customId)
    if (!processed.has(line.customId)) expect(read(line)).toEqual(unrunLine(line.customId, unrun))
    else if (k === 1 || k === 2) expect(fields(line.error)).toEqual(errors[k])
    else answered(line, k)
  }
  expect(all.filter((l) => l.reply).length).toBe(b.succeeded)
}

/** Writes 100,000 lines quickly (within 5 s), of more than `perLine` bytes each on average. */
export function expectQuickLines(c: BatchClient, perLine: number): void {
  const started = performance.now()
  let bytes = 0
  for (let n = 0; n < 100_000; n++) bytes += c.line(`tag_${n}`, { system: "s", prompt: `item ${n}` }).length
  expect(bytes).toBeGreaterThan(100_000 * perLine)
  expect(performance.now() - started).toBeLessThan(5000)
}

/**
 * Runs `call` (an expression, awaited) in a Bun process of its own, after `setup` (statements, imports first), so
 * that only what it does is measured. Returns what it gave (through JSON) and how far the process's memory rose over
 * its level before the call.
 */
export async function measured<T>(
  tmp: Tmp,
  name: string,
  setup: string,
  call: string,
): Promise<{ result: T; growth: number }> {
  const script = tmp.join(name)
  await Bun.write(
    script,
    `${setup}
Bun.gc(true)
const before = process.memoryUsage().rss
let peak = before
const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 2)
const result = await ${call}
clearInterval(sampler)
console.log(JSON.stringify({ result, growth: peak - before }))
`,
  )
  const child = Bun.spawn([process.execPath, script], { stdout: "pipe", stderr: "pipe" })
  const [out, err, code] = await Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
    child.exited,
  ])
  expect([code, err]).toEqual([0, ""])
  return JSON.parse(out) as { result: T; growth: number }
}

/** The reply of the fake that `expectBigDownload` asks for: each answer is 7,500 characters longer than its input. */
export const bigReply = (input: string) => `${input} ${"x".repeat(7_500)}`

/**
 * A batch of 20,000 items (over `base`) answered with `bigReply`, 150 MB of results, is downloaded in a process of
 * its own, by a client `c` that `setup` makes there (statements, imports first) like the `c` given here: the file is
 * written whole, and the process's memory grows by less than 100 MB. Every line reads back as its item's answer.
 */
export async function expectBigDownload(c: BatchClient, setup: string, base: Omit<Request, "prompt"> = {}) {
  await using tmp = await tmpdir()
  const created = await submit(c, tmp, tagOf(20_000), base)
  const batch = await c.retrieve(created.id, never())
  const { result: written, growth } = await measured(
    tmp,
    "download.ts",
    setup,
    `c.download(${JSON.stringify(batch)}, ${JSON.stringify(outputs(tmp))}, new AbortController().signal)`,
  )
  // (through JSON: an announced length the fake did not send is left out)
  expect(written).toEqual({ output: tmp.join("out.jsonl"), announced: {} })
  expect(Bun.file(tmp.join("out.jsonl")).size).toBeGreaterThan(150_000_000)
  expect(growth).toBeLessThan(100_000_000)
  let n = 0
  for (const line of (await Bun.file(tmp.join("out.jsonl")).text()).split("\n")) {
    if (!line) continue
    const parsed = c.parse(line)
    expect(parsed.reply?.text).toBe(bigReply(`item ${parsed.customId.slice(TAG.length + 1)}`))
    n++
  }
  expect(n).toBe(20_000)
}

/** The timeout (ms) of the client `expectStalledDownload` is given: the error it expects says 0.3 s. */
export const STALL_MS = 300

/** A server that answers every request with the start of a body and then nothing more, the connection left open. */
export function stallingServer() {
  return Bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    idleTimeout: 0,
    fetch: () =>
      new Response(
        new ReadableStream({
          start(controller) {
            controller.enqueue(new TextEncoder().encode('{"custom_id":"t_0",'))
            // and nothing more: the connection stays open
          },
        }),
      ),
  })
}

/** What a `plainServer` serves: two result lines, one with a character of three bytes in UTF-8. */
export const SERVED = '{"custom_id":"t_0","text":"✓"}\n{"custom_id":"t_1","text":"x"}\n'

/**
 * A server that answers every request with SERVED as a plain body, which Bun sends with its Content-Length; a request
 * whose path has "gzip" in it gets SERVED gzipped, with Content-Encoding gzip and the compressed body's length.
 */
export function plainServer() {
  const gzipped = Bun.gzipSync(SERVED)
  const type = { "content-type": "application/octet-stream" }
  return Bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    fetch: (req) =>
      new URL(req.url).pathname.includes("gzip")
        ? new Response(gzipped, { headers: { ...type, "content-encoding": "gzip" } })
        : new Response(SERVED, { headers: type }),
  })
}

/**
 * A download from a `stallingServer`, by a client whose timeout is STALL_MS, is a retryable timeout, and leaves
 * neither the file nor its .part behind.
 */
export async function expectStalledDownload(
  c: BatchClient,
  batch: RemoteBatch,
  to: { output: string; errors: string },
): Promise<void> {
  expect(await thrown(() => c.download(batch, to, never()))).toEqual(
    errorFields("timeout", "no answer within 0.3 s", { retryable: true }),
  )
  expect(await Bun.file(to.output).exists()).toBe(false)
  expect(await Bun.file(`${to.output}.part`).exists()).toBe(false)
}

/**
 * The fake answers the first GET of a new batch (of 2 items, over `base`) with a 404 (notFoundOnce): the client says
 * not_found with the message `message` gives for the batch's id, and the next retrieve finds the batch, completed.
 */
export async function expectNotFoundOnce(
  c: BatchClient,
  message: (id: string) => string,
  base: Omit<Request, "prompt"> = {},
): Promise<void> {
  await using tmp = await tmpdir()
  const created = await submit(c, tmp, tagOf(2), base)
  expect(await thrown(() => c.retrieve(created.id, never()))).toEqual(
    errorFields("not_found", `HTTP 404: ${message(created.id)}`, { status: 404 }),
  )
  expect((await c.retrieve(created.id, never())).outcome).toBe("completed")
}
