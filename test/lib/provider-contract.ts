/**
 * The contract every provider must honour; run it with `testProvider(provider, harness)`.
 * A harness puts the provider in front of a server it controls (a fake of the real API, or a small Bun.serve)
 * and says which faults that server can produce; a check that needs a fault the harness does not list does not
 * apply to that provider (529 is Anthropic's alone) and is not registered. A provider that talks to no server (mock)
 * has a harness with no faults and no `wire`: the checks of its options, replies, usage and abort still apply.
 */
import { describe, expect, test } from "bun:test"
import * as v from "valibot"
import type {
  OptionsSchema,
  Provider,
  ProviderClient,
  ProviderContext,
  Request,
  Usage,
} from "../../src/plugins/api/define.ts"
import { ProviderError } from "../../src/plugins/api/errors.ts"

/** What a contract check may ask a harness's server to do to one request. */
export type Fault =
  /** 429 with `Retry-After` in seconds. */
  | "429"
  /** 429 with `Retry-After` as an HTTP-date. */
  | "429-date"
  | "500"
  /** Anthropic's "overloaded". */
  | "529"
  /** Headers never come: the provider's own timeout must end the call. */
  | "hang"
  /** Headers go out, then the connection dies mid-body. */
  | "reset"
  /** A 200 whose body is not JSON. */
  | "garbage"
  /** The server refuses a wrong key with a 401; not scripted per prompt, but asked for by a wrong `apiKey`. */
  | "auth"
  /** No quota or credit left: no request can pass until someone pays. */
  | "quota"

/** A fault that is scripted per prompt (a wrong key is not: it is the client's). */
export type ScriptedFault = Exclude<Fault, "auth">

/** One running server of a harness. */
export interface HarnessServer<O> extends AsyncDisposable {
  /**
   * The arguments of `provider.create` for a client of this server: with the key the server takes, or with
   * `apiKey` instead when given (a wrong key, for "auth").
   */
  args(context: { timeoutMs: number; apiKey?: string }): [options: O, context: ProviderContext]
  /**
   * The first request whose prompt is `prompt` gets `fault`; later ones are answered. `retryAfter` is the
   * `Retry-After` header of a "429" or "429-date".
   */
  fail(prompt: string, fault: ScriptedFault, retryAfter?: string): void
  /** The text the server answers `prompt` with when it does not fault. */
  echo(prompt: string): string
  /** The JSON bodies of the requests it answered with success, in order. */
  readonly bodies: readonly Record<string, unknown>[]
  /** Bodies the server found invalid against the API's official spec, when it checks: must stay empty. */
  readonly invalid?: readonly unknown[]
}

export interface ProviderHarness<O> {
  /** Names the harness in test titles when one provider runs under several (openai's endpoints). */
  label?: string
  /** The faults its server can produce. Checks that need one not listed do not apply and are not registered. */
  supports: readonly Fault[]
  start(): Promise<HarnessServer<O>>
  /**
   * The body the server must receive for `request` under `model`: the provider's wire mapping, written out
   * here from its documentation, not computed by the provider's own code. Left out for a provider that talks to
   * no server: its server records no bodies, and its requests are checked by the replies alone.
   */
  wire?(model: string, request: Request): Record<string, unknown>
  /**
   * The usage the server reports for a body it received and the text it answered; without `wire`, for the request
   * itself (as `{ ...request }`) and the text.
   */
  usage(body: Record<string, unknown>, text: string): Usage
  /** `given` is what a job may write at the least; `parsed`, what the schema must make of it (its defaults). */
  options: { given: Record<string, unknown>; parsed: Record<string, unknown> }
  /**
   * For a provider that does structured output: where the server finds the schema in a body it received. Its
   * server answers a request carrying a schema with `{"label": <prompt>}` as JSON, or, for the prompt
   * `NOT_JSON`, with text that is not JSON.
   */
  structured?: { schemaIn(body: Record<string, unknown>): unknown }
}

/** The schema the structured-output checks send. */
export const LABEL_SCHEMA = {
  type: "object",
  properties: { label: { type: "string" } },
  required: ["label"],
  additionalProperties: false,
}

/** The prompt a harness server answers with text that is not JSON, even under a schema. */
export const NOT_JSON = "contract: answer in prose"

/** The fields of a ProviderError the runner reads. */
interface Outcome {
  class: string
  retryable: boolean
  pause: boolean
  retryAfterMs: number | undefined
  status: number | undefined
}

const never = () => new AbortController().signal

/** The ProviderError a call fails with, as the fields the runner reads; anything else fails the test. */
async function failure(client: ProviderClient, request: Request): Promise<Outcome> {
  let reply: unknown
  try {
    reply = await client.call(request, never())
  } catch (e) {
    if (!(e instanceof ProviderError)) throw e
    return {
      class: e.errorClass,
      retryable: e.retryable,
      pause: e.pause,
      retryAfterMs: e.retryAfterMs,
      status: e.status,
    }
  }
  throw new Error(`expected a ProviderError, got a reply: ${JSON.stringify(reply)}`)
}

/** What a call rejects with, or a failure of the test when it resolves. */
async function rejection(call: Promise<unknown>): Promise<unknown> {
  return call.then(
    (reply) => {
      throw new Error(`expected a rejection, got a reply: ${JSON.stringify(reply)}`)
    },
    (e: unknown) => e,
  )
}

/** A request with every field the neutral request has; `params` are valid for every API under test. */
export const FULL: Request = {
  system: "You answer in one word.",
  prompt: "contract: everything",
  max_tokens: 64,
  temperature: 0.25,
  params: { top_p: 0.5, metadata: { user_id: "u-1" } },
}

/** Short enough to keep the suite fast, long enough for a loaded machine to answer a healthy request. */
const HANG_TIMEOUT_MS = 300
const TIMEOUT_MS = 5000

export function testProvider<S extends OptionsSchema>(
  provider: Provider<S>,
  harness: ProviderHarness<v.InferOutput<S>>,
): void {
  const supports = new Set(harness.supports)
  const start = async (timeoutMs = TIMEOUT_MS) => {
    const server = await harness.start()
    const [options, context] = server.args({ timeoutMs })
    return {
      server,
      context,
      client: provider.create(options, context),
      [Symbol.asyncDispose]: () => server[Symbol.asyncDispose](),
    }
  }

  /** A check that needs `needs` of the server: registered only where the provider's API has those faults. */
  const check = (name: string, needs: Fault[], body: () => Promise<void>) => {
    if (needs.every((f) => supports.has(f))) test(name, body)
  }

  /** A scripted fault fails with `expected`, and the same client then answers the same prompt. */
  const fails = async (fault: ScriptedFault, expected: Outcome, timeoutMs = TIMEOUT_MS) => {
    await using running = await start(timeoutMs)
    const { server, client } = running
    const prompt = `contract: ${fault}`
    server.fail(prompt, fault)
    expect(await failure(client, { prompt })).toEqual(expected)
    expect(await client.call({ prompt }, never())).toMatchObject({ text: server.echo(prompt) })
  }

  describe(`provider contract: ${provider.name}${harness.label ? ` (${harness.label})` : ""}`, () => {
    test("the options schema takes the documented defaults and refuses an unknown key", () => {
      expect(v.parse(provider.options, harness.options.given)).toEqual(harness.options.parsed)
      const unknown = { ...harness.options.given, contract_unknown_key: true }
      expect(v.safeParse(provider.options, unknown).success).toBe(false)
    })

    test("maps a request to the wire: a plain prompt, then system, max_tokens, temperature and params", async () => {
      await using running = await start()
      const { server, context, client } = running
      expect(v.safeParse(provider.options, server.args({ timeoutMs: TIMEOUT_MS })[0]).success).toBe(true)
      const plain: Request = { prompt: "contract: plain" }
      // without a wire (no server), the server records nothing: the bodies expected are none
      const wire = (request: Request) => (harness.wire ? [harness.wire(context.model, request)] : [])
      expect((await client.call(plain, never())).text).toBe(server.echo(plain.prompt))
      expect(server.bodies).toEqual(wire(plain))
      expect((await client.call(FULL, never())).text).toBe(server.echo(FULL.prompt))
      expect(server.bodies.slice(1)).toEqual(wire(FULL))
      expect(server.invalid ?? []).toEqual([])
    })

    test("reads usage exactly as the server reports it", async () => {
      await using running = await start()
      const { server, client } = running
      for (const [i, request] of [{ prompt: "contract: usage" }, FULL].entries()) {
        const reply = await client.call(request, never())
        const body = harness.wire ? server.bodies[i] : { ...request }
        if (!body) throw new Error("the server recorded no body")
        const usage = harness.usage(body, reply.text)
        // a provider that swapped the two counts must not pass
        expect(usage.input_tokens).not.toBe(usage.output_tokens)
        expect(reply.text).toBe(server.echo(request.prompt))
        expect(reply.usage).toEqual(usage)
        // a whole answer: `finish` is undefined or "stop", as Reply documents
        expect([undefined, "stop"]).toContain(reply.finish)
      }
    })

    check("429 with Retry-After in seconds: rate_limit, retryable, waits that long", ["429"], async () => {
      await using running = await start()
      const { server, client } = running
      server.fail("contract: 429", "429", "7")
      expect(await failure(client, { prompt: "contract: 429" })).toEqual({
        class: "rate_limit",
        retryable: true,
        pause: false,
        retryAfterMs: 7000,
        status: 429,
      })
      expect((await client.call({ prompt: "contract: 429" }, never())).text).toBe(
        server.echo("contract: 429"),
      )
    })

    check("429 with Retry-After as an HTTP-date: waits until then", ["429-date"], async () => {
      await using running = await start()
      const { server, client } = running
      // an HTTP-date has whole seconds: aim at one, so only the time the call takes is unknown
      const at = Math.ceil(Date.now() / 1000) * 1000 + 30_000
      server.fail("contract: 429-date", "429-date", new Date(at).toUTCString())
      const before = Date.now()
      const outcome = await failure(client, { prompt: "contract: 429-date" })
      const after = Date.now()
      expect({ ...outcome, retryAfterMs: undefined }).toEqual({
        class: "rate_limit",
        retryable: true,
        pause: false,
        retryAfterMs: undefined,
        status: 429,
      })
      expect(outcome.retryAfterMs).toBeGreaterThanOrEqual(at - after)
      expect(outcome.retryAfterMs).toBeLessThanOrEqual(at - before)
    })

    check("500: server, retryable", ["500"], () =>
      fails("500", { class: "server", retryable: true, pause: false, retryAfterMs: undefined, status: 500 }),
    )

    check("529 (overloaded): server, retryable", ["529"], () =>
      fails("529", { class: "server", retryable: true, pause: false, retryAfterMs: undefined, status: 529 }),
    )

    check(`no answer within timeoutMs (${HANG_TIMEOUT_MS} ms): timeout, retryable`, ["hang"], async () => {
      const started = performance.now()
      await fails(
        "hang",
        { class: "timeout", retryable: true, pause: false, retryAfterMs: undefined, status: undefined },
        HANG_TIMEOUT_MS,
      )
      // the timeout, then one healthy answer
      expect(performance.now() - started).toBeGreaterThanOrEqual(HANG_TIMEOUT_MS - 10)
      expect(performance.now() - started).toBeLessThan(HANG_TIMEOUT_MS + 2000)
    })

    check("a connection reset mid-body: network, retryable", ["reset"], () =>
      fails("reset", {
        class: "network",
        retryable: true,
        pause: false,
        retryAfterMs: undefined,
        status: undefined,
      }),
    )

    check("a 200 whose body is not JSON: bad_response, retryable", ["garbage"], () =>
      fails("garbage", {
        class: "bad_response",
        retryable: true,
        pause: false,
        retryAfterMs: undefined,
        status: 200,
      }),
    )

    check("a wrong key (401): auth, not retryable, pauses the run", ["auth"], async () => {
      await using server = await harness.start()
      const [options, context] = server.args({ timeoutMs: TIMEOUT_MS, apiKey: "contract-wrong-key" })
      const client = provider.create(options, context)
      expect(await failure(client, { prompt: "contract: auth" })).toEqual({
        class: "auth",
        retryable: false,
        pause: true,
        retryAfterMs: undefined,
        status: 401,
      })
      expect(server.bodies).toEqual([])
    })

    check("no quota or credit left: quota, not retryable, pauses the run", ["quota"], async () => {
      await using running = await start()
      const { server, client } = running
      server.fail("contract: quota", "quota")
      const outcome = await failure(client, { prompt: "contract: quota" })
      expect({ ...outcome, status: undefined }).toEqual({
        class: "quota",
        retryable: false,
        pause: true,
        retryAfterMs: undefined,
        status: undefined,
      })
      // a 429 (OpenAI), a 400 (Anthropic's credit balance) or a 402: always an HTTP error status
      expect(outcome.status).toBeGreaterThanOrEqual(400)
      expect(outcome.status).toBeLessThan(500)
    })

    test("a signal aborted before the call: rejects with something that is not a ProviderError", async () => {
      await using running = await start()
      const abort = new AbortController()
      abort.abort(new Error("contract: stopped before the call"))
      const e = await rejection(running.client.call({ prompt: "contract: aborted early" }, abort.signal))
      expect(e).not.toBeInstanceOf(ProviderError)
    })

    check("an abort by the caller mid-call: rejects promptly, with no ProviderError", ["hang"], async () => {
      await using running = await start()
      const { server, client } = running
      server.fail("contract: aborted", "hang")
      const abort = new AbortController()
      const started = performance.now()
      const pending = rejection(client.call({ prompt: "contract: aborted" }, abort.signal))
      await Bun.sleep(50)
      abort.abort(new Error("contract: the run is stopping"))
      const e = await pending
      expect(e).not.toBeInstanceOf(ProviderError)
      expect(performance.now() - started).toBeLessThan(TIMEOUT_MS / 2)
    })

    if (harness.structured) {
      const { schemaIn } = harness.structured
      const schema = { name: "contract_label", schema: LABEL_SCHEMA }

      test("structured output: the schema reaches the server in the provider's form; the JSON answer comes back as text", async () => {
        await using running = await start()
        const reply = await running.client.call({ prompt: "bug", schema }, new AbortController().signal)
        expect(JSON.parse(reply.text)).toEqual({ label: "bug" })
        expect(reply.finish === undefined || reply.finish === "stop").toBe(true)
        expect(schemaIn(running.server.bodies.at(-1)!)).toEqual(LABEL_SCHEMA)
        expect(running.server.invalid ?? []).toEqual([])
      })

      test("structured output: an answer that is not what the schema asks is returned, not thrown: the runner gates it", async () => {
        await using running = await start()
        const reply = await running.client.call({ prompt: NOT_JSON, schema }, new AbortController().signal)
        expect(typeof reply.text).toBe("string")
        expect(reply.text).not.toBe(JSON.stringify({ label: NOT_JSON }))
      })
    }
  })
}
