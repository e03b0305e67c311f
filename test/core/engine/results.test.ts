import { describe, expect, test } from "bun:test"
import * as results from "../../../src/core/engine/results.ts"
import type { BatchClient, BatchExpect, Downloaded } from "../../../src/plugins/api/define.ts"
import anthropic from "../../../src/plugins/providers/anthropic/anthropic.ts"
import openai from "../../../src/plugins/providers/openai/openai.ts"
import { tmpdir, type Tmp } from "../../lib/tmp.ts"

const TAG = "r1-b0001"
/** The custom_id of item k of TAG's batch. */
const id = (k: number) => `${TAG}_${k}`

/** A batch client of a real provider, for its `parse`: no call is made. */
function client(provider: "openai" | "anthropic"): BatchClient {
  const context = { model: "m", baseUrl: "http://127.0.0.1:9", apiKey: "sk-test-results", timeoutMs: 1000 }
  const c =
    provider === "openai" ? openai.create({ endpoint: "chat" }, context) : anthropic.create({}, context)
  if (!c.batch) throw new Error(`the ${provider} provider has no batch client`)
  return c.batch
}

/** What `check` reads lines with: the provider's parse, TAG's custom_ids, items 0 to 3. */
const readerOf = (provider: "openai" | "anthropic"): results.Reader => {
  const c = client(provider)
  return { parse: (text) => c.parse(text), prefix: `${TAG}_`, items: new Set([0, 1, 2, 3]) }
}
const OPENAI = readerOf("openai")
const ANTHROPIC = readerOf("anthropic")

// OpenAI lines (BatchRequestOutput): an answer, a line error, a request never run
const answered = (customId: string) =>
  JSON.stringify({
    id: "batch_req_1",
    custom_id: customId,
    // the chat completion cut to what the reader needs: `check` asks only that the line reads
    response: {
      status_code: 200,
      request_id: "req_1",
      body: {
        object: "chat.completion",
        choices: [{ index: 0, message: { role: "assistant", content: "Hello." }, finish_reason: "stop" }],
        usage: { prompt_tokens: 22, completion_tokens: 2, total_tokens: 24 },
      },
    },
    error: null,
  })
const failed = (customId: string) =>
  JSON.stringify({
    id: "batch_req_2",
    custom_id: customId,
    response: {
      status_code: 500,
      request_id: "req_2",
      body: { error: { message: "The server had an error.", type: "server_error", param: null, code: null } },
    },
    error: null,
  })
const unrun = (customId: string) =>
  JSON.stringify({
    id: "batch_req_3",
    custom_id: customId,
    response: null,
    error: {
      code: "batch_expired",
      message: "This request could not be executed before the window expired.",
    },
  })

// Anthropic lines (MessageBatchIndividualResponse), of each result type
const message = {
  id: "msg_1",
  type: "message",
  role: "assistant",
  model: "claude-haiku-4-5",
  content: [{ type: "text", text: "Hello.", citations: null }],
  stop_reason: "end_turn",
  stop_sequence: null,
  usage: { input_tokens: 11, output_tokens: 2 },
}
const succeeded = (customId: string) =>
  JSON.stringify({ custom_id: customId, result: { type: "succeeded", message } })
const errored = (customId: string) =>
  JSON.stringify({
    custom_id: customId,
    result: { type: "errored", error: { type: "error", error: { type: "api_error", message: "Internal" } } },
  })
const ended = (customId: string, type: "canceled" | "expired") =>
  JSON.stringify({ custom_id: customId, result: { type } })

/** The first half of a line, as a garbled download has it. */
const half = (line: string) => line.slice(0, Math.floor(line.length / 2))

/** Writes `text` to tmp's `name`; returns its path. */
async function file(tmp: Tmp, name: string, text: string): Promise<string> {
  await Bun.write(tmp.join(name), text)
  return tmp.join(name)
}

/** Lines as a file holds them: one a line, each ended by a newline. */
const jsonl = (lines: string[]) => lines.map((l) => `${l}\n`).join("")

/** `check` of an output file (and an error file) of these lines, with no length announced. */
async function checked(
  tmp: Tmp,
  reader: results.Reader,
  expect: BatchExpect | undefined,
  output: string[] | undefined,
  errors?: string[],
) {
  const files: Downloaded = {}
  if (output) files.output = await file(tmp, "out.jsonl", jsonl(output))
  if (errors) files.errors = await file(tmp, "err.jsonl", jsonl(errors))
  return results.check(files, expect, reader)
}

/** What `check` gives for files it trusts. */
const trusted = (output: number, errors = 0): results.Checked => ({
  problems: [],
  broken: [],
  suspect: new Set(),
  lines: { output, errors },
})

describe("results.check", () => {
  test("OpenAI files that end with newlines, as long as announced, of this batch's lines once each and as many as counted, pass", async () => {
    await using tmp = await tmpdir()
    const out = jsonl([answered(id(2)), answered(id(0))])
    const err = jsonl([failed(id(1)), unrun(id(3))])
    const files: Downloaded = {
      output: await file(tmp, "out.jsonl", out),
      errors: await file(tmp, "err.jsonl", err),
      announced: { output: Buffer.byteLength(out), errors: Buffer.byteLength(err) },
    }
    const expect_ = { output: { min: 2, max: 2 }, errors: { min: 1, max: 2 } }
    expect(await results.check(files, expect_, OPENAI)).toEqual(trusted(2, 2))
    // without counts, or with a length announced for one file only, the same
    expect(await results.check({ ...files, announced: undefined }, undefined, OPENAI)).toEqual(trusted(2, 2))
    expect(
      await results.check({ ...files, announced: { errors: Buffer.byteLength(err) } }, expect_, OPENAI),
    ).toEqual(trusted(2, 2))
  })

  test("an Anthropic results file with as many lines of each type as counted passes", async () => {
    await using tmp = await tmpdir()
    const lines = [ended(id(3), "expired"), succeeded(id(0)), errored(id(2)), succeeded(id(1))]
    const expect_ = {
      output: { min: 4, max: 4 },
      kinds: { succeeded: 2, errored: 1, canceled: 0, expired: 1 },
    }
    expect(await checked(tmp, ANTHROPIC, expect_, lines)).toEqual(trusted(4))
  })

  test("an empty output file, where none was counted, passes; where lines were counted, it is short", async () => {
    await using tmp = await tmpdir()
    const none = { output: { min: 0, max: 0 }, errors: { min: 4, max: 4 } }
    const all = [failed(id(0)), failed(id(1)), unrun(id(2)), unrun(id(3))]
    expect(await checked(tmp, OPENAI, none, [], all)).toEqual(trusted(0, 4))
    expect(await checked(tmp, OPENAI, { output: { min: 3, max: 3 } }, [])).toEqual({
      problems: ["output file: 0 lines, where the provider reported 3"],
      broken: [],
      suspect: new Set(["output"]),
      lines: { output: 0, errors: 0 },
    })
  })

  test("a file whose last line has no newline is suspect, though every line reads", async () => {
    await using tmp = await tmpdir()
    const files: Downloaded = {
      output: await file(tmp, "out.jsonl", `${answered(id(0))}\n${answered(id(1))}`),
      errors: await file(tmp, "err.jsonl", `${failed(id(2))}\n`),
    }
    const expect_ = { output: { min: 2, max: 2 }, errors: { min: 1, max: 1 } }
    expect(await results.check(files, expect_, OPENAI)).toEqual({
      problems: ["output file: its last line has no newline (cut short?)"],
      broken: [],
      suspect: new Set(["output"]),
      lines: { output: 2, errors: 1 },
    })
  })

  test("a file of another length than the server announced is suspect", async () => {
    await using tmp = await tmpdir()
    const out = jsonl([answered(id(0)), answered(id(1))])
    const err = jsonl([failed(id(2))])
    // 2 answer lines of 312 bytes and their newlines; 1 error line of 213 bytes and its newline
    expect([Buffer.byteLength(out), Buffer.byteLength(err)]).toEqual([626, 214])
    const files: Downloaded = {
      output: await file(tmp, "out.jsonl", out),
      errors: await file(tmp, "err.jsonl", err),
      announced: { output: 900, errors: 200 },
    }
    expect(await results.check(files, undefined, OPENAI)).toEqual({
      problems: [
        "output file: 626 bytes, where the server announced 900 (cut short?)",
        "errors file: 214 bytes, where the server announced 200 (cut short?)",
      ],
      broken: [],
      suspect: new Set(["output", "errors"]),
      lines: { output: 2, errors: 1 },
    })
  })

  test("a custom_id given twice, in one file or across both, is a problem, and each file that has it is suspect", async () => {
    await using tmp = await tmpdir()
    expect(
      await checked(tmp, OPENAI, undefined, [answered(id(0)), answered(id(1)), answered(id(0))]),
    ).toEqual({
      problems: ["1 custom_id(s) given more than once"],
      broken: [],
      suspect: new Set(["output"]),
      lines: { output: 3, errors: 0 },
    })
    expect(
      await checked(
        tmp,
        OPENAI,
        undefined,
        [answered(id(0)), answered(id(1))],
        [failed(id(1)), failed(id(2))],
      ),
    ).toEqual({
      problems: ["1 custom_id(s) given more than once"],
      broken: [],
      suspect: new Set(["output", "errors"]),
      lines: { output: 2, errors: 2 },
    })
    // an item three times is two too many
    expect((await checked(tmp, ANTHROPIC, undefined, Array(3).fill(succeeded(id(3))))).problems).toEqual([
      "2 custom_id(s) given more than once",
    ])
  })

  test("a line of another batch, of an item not in this batch, or with a custom_id of another shape, is a stranger", async () => {
    await using tmp = await tmpdir()
    const strangers = [
      answered("r1-b0002_0"),
      answered(id(9)),
      answered(`${TAG}_x`),
      answered(`${TAG}_`),
      answered(`${TAG}_1.5`),
      answered("r1-b00011_0"),
      answered(TAG),
    ]
    expect(
      await checked(tmp, OPENAI, undefined, [answered(id(0)), ...strangers], [failed("r1-b0000_1")]),
    ).toEqual({
      problems: ["8 line(s) with a custom_id that is not one of this batch's"],
      broken: [],
      suspect: new Set(["output", "errors"]),
      lines: { output: 8, errors: 1 },
    })
    // one in the error file alone makes it alone suspect
    expect(
      await checked(tmp, OPENAI, undefined, [answered(id(0))], [failed(id(1)), unrun("other_3")]),
    ).toEqual({
      problems: ["1 line(s) with a custom_id that is not one of this batch's"],
      broken: [],
      suspect: new Set(["errors"]),
      lines: { output: 1, errors: 2 },
    })
  })

  test("line counts outside the provider's bounds are a problem of each file that has them", async () => {
    await using tmp = await tmpdir()
    const expect_ = { output: { min: 3, max: 3 }, errors: { min: 0, max: 1 } }
    expect(
      await checked(tmp, OPENAI, expect_, [answered(id(0)), answered(id(1))], [unrun(id(2)), unrun(id(3))]),
    ).toEqual({
      problems: [
        "output file: 2 lines, where the provider reported 3",
        "errors file: 2 lines, where the provider reported 0 to 1",
      ],
      broken: [],
      suspect: new Set(["output", "errors"]),
      lines: { output: 2, errors: 2 },
    })
    // one too many in the output, and item 3 in both files
    const four = [answered(id(0)), answered(id(1)), answered(id(2)), answered(id(3))]
    expect(await checked(tmp, OPENAI, expect_, four, [unrun(id(3))])).toEqual({
      problems: [
        "1 custom_id(s) given more than once",
        "output file: 4 lines, where the provider reported 3",
      ],
      broken: [],
      suspect: new Set(["output", "errors"]),
      lines: { output: 4, errors: 1 },
    })
    // an error file that was counted lines but not downloaded
    expect(await checked(tmp, OPENAI, { errors: { min: 2, max: 2 } }, [answered(id(0))])).toEqual({
      problems: ["errors file: 0 lines, where the provider reported 2"],
      broken: [],
      suspect: new Set(["errors"]),
      lines: { output: 1, errors: 0 },
    })
  })

  test("Anthropic: lines of a type the provider counted fewer of, or more of, are a problem of the results file", async () => {
    await using tmp = await tmpdir()
    const expect_ = {
      output: { min: 4, max: 4 },
      kinds: { succeeded: 2, errored: 1, canceled: 0, expired: 1 },
    }
    const lines = [succeeded(id(0)), succeeded(id(1)), succeeded(id(2)), ended(id(3), "expired")]
    expect(await checked(tmp, ANTHROPIC, expect_, lines)).toEqual({
      problems: [
        '3 "succeeded" lines, where the provider reported 2',
        "the lines disagree with the provider's counts (succeeded 3 of 2, errored 0 of 1, canceled 0 of 0, expired 1 of 1; 0 unreadable)",
      ],
      broken: [],
      suspect: new Set(["output"]),
      lines: { output: 4, errors: 0 },
    })
    // a type the provider counted none of
    const canceled = [succeeded(id(0)), succeeded(id(1)), errored(id(2)), ended(id(3), "canceled")]
    expect((await checked(tmp, ANTHROPIC, expect_, canceled)).problems).toEqual([
      '1 "canceled" lines, where the provider reported 0',
      "the lines disagree with the provider's counts (succeeded 2 of 2, errored 1 of 1, canceled 1 of 0, expired 0 of 1; 0 unreadable)",
    ])
  })

  test("lines that cannot be read are listed, numbered as in the file (blank lines too), with the custom_id they seem to carry; a line naming none of the batch's is a problem", async () => {
    await using tmp = await tmpdir()
    const text = [
      answered(id(0)),
      "",
      half(answered(id(1))),
      "<!DOCTYPE html>",
      JSON.stringify({ custom_id: id(2), response: null, error: null }),
      JSON.stringify({ id: "batch_req_9", response: null, error: null }),
      answered(id(3)),
    ].join("\n")
    const files = { output: await file(tmp, "out.jsonl", `${text}\n`) }
    expect(await results.check(files, { output: { min: 6, max: 6 } }, OPENAI)).toEqual({
      // an HTML page's line, or one whose custom_id cannot be read, could be anyone's: never taken as it is
      problems: ["2 unreadable line(s) naming none of this batch's custom_ids"],
      broken: [
        { file: "output", line: 3, text: half(answered(id(1))), customId: id(1) },
        { file: "output", line: 4, text: "<!DOCTYPE html>", customId: undefined },
        {
          file: "output",
          line: 5,
          text: JSON.stringify({ custom_id: id(2), response: null, error: null }),
          customId: id(2),
        },
        {
          file: "output",
          line: 6,
          text: JSON.stringify({ id: "batch_req_9", response: null, error: null }),
          customId: undefined,
        },
      ],
      suspect: new Set(["output"]),
      lines: { output: 6, errors: 0 },
    })
    // in the error file, the error file is suspect
    const err = await checked(tmp, OPENAI, undefined, [answered(id(0))], [failed(id(1)), half(failed(id(2)))])
    expect([err.problems, err.broken, err.suspect]).toEqual([
      [],
      [{ file: "errors", line: 2, text: half(failed(id(2))), customId: id(2) }],
      new Set(["errors"]),
    ])
  })

  test("an unreadable line that seems to carry a custom_id another line has is a custom_id given twice", async () => {
    await using tmp = await tmpdir()
    const garbled = half(succeeded(id(0)))
    expect(await checked(tmp, ANTHROPIC, undefined, [succeeded(id(0)), garbled, succeeded(id(1))])).toEqual({
      problems: ["1 custom_id(s) given more than once"],
      broken: [{ file: "output", line: 2, text: garbled, customId: id(0) }],
      suspect: new Set(["output"]),
      lines: { output: 3, errors: 0 },
    })
    // two unreadable lines of one custom_id, the same
    expect((await checked(tmp, ANTHROPIC, undefined, [garbled, garbled])).problems).toEqual([
      "1 custom_id(s) given more than once",
    ])
  })

  test("Anthropic: types falling short by exactly the unreadable lines is no problem (those lines may be of any type); by more, it is", async () => {
    await using tmp = await tmpdir()
    const expect_ = {
      output: { min: 4, max: 4 },
      kinds: { succeeded: 2, errored: 1, canceled: 0, expired: 1 },
    }
    // the errored line and the expired one cannot be read: 2 short, 2 unreadable
    const lines = [succeeded(id(0)), half(errored(id(2))), succeeded(id(1)), half(ended(id(3), "expired"))]
    expect(await checked(tmp, ANTHROPIC, expect_, lines)).toEqual({
      problems: [],
      broken: [
        { file: "output", line: 2, text: half(errored(id(2))), customId: id(2) },
        { file: "output", line: 4, text: half(ended(id(3), "expired")), customId: id(3) },
      ],
      suspect: new Set(["output"]),
      lines: { output: 4, errors: 0 },
    })
    // a line left out as well: 3 short, 2 unreadable
    expect((await checked(tmp, ANTHROPIC, expect_, lines.slice(1))).problems).toEqual([
      "output file: 3 lines, where the provider reported 4",
      "the lines disagree with the provider's counts (succeeded 1 of 2, errored 0 of 1, canceled 0 of 0, expired 0 of 1; 2 unreadable)",
    ])
  })
})

describe("results.claimedId and results.itemOf", () => {
  test("claimedId finds the custom_id a line that cannot be read seems to carry, if its value is whole", () => {
    expect(results.claimedId(half(succeeded(id(3))))).toBe(id(3))
    expect(results.claimedId('{"id": "x", "custom_id" : "a_1", "resp')).toBe("a_1")
    expect(results.claimedId('{"custom_id":"a_')).toBeUndefined()
    expect(results.claimedId('{"custom_id":""}')).toBeUndefined()
    expect(results.claimedId("<html>")).toBeUndefined()
    // a custom_id quoted inside a text is escaped: not the line's own
    expect(results.claimedId(JSON.stringify({ text: '"custom_id":"a_1"' }))).toBeUndefined()
  })

  test("itemOf gives the item a custom_id names, only when it is one of the batch's", () => {
    const reader = { prefix: `${TAG}_`, items: new Set([0, 1, 2, 3]) }
    expect([0, 3].map((k) => results.itemOf(id(k), reader))).toEqual([0, 3])
    for (const stranger of [undefined, id(4), `${TAG}_x`, `${TAG}_`, `${TAG}_-1`, `${TAG}_1e0`, "r1-b0002_1"])
      expect(results.itemOf(stranger, reader)).toBeUndefined()
  })
})

describe("results.linesOf", () => {
  test("streams a file's non-blank lines with their numbers, across chunk boundaries and multi-byte characters, the last one without a newline too", async () => {
    await using tmp = await tmpdir()
    // 30,000 lines of about 30 bytes, each with a 3-byte character: many chunks, split anywhere
    const lines = Array.from({ length: 30_000 }, (_, k) =>
      k % 7 === 3 ? "" : `{"custom_id":"t_${k}","x":"✓"}`,
    )
    const path = await file(tmp, "big.jsonl", lines.join("\n"))
    expect(Bun.file(path).size).toBeGreaterThan(800_000)
    const read: { text: string; n: number }[] = []
    for await (const line of results.linesOf(path)) read.push(line)
    const want = lines.flatMap((text, k) => (text ? [{ text, n: k + 1 }] : []))
    expect(read.length).toBe(25_714)
    expect(read).toEqual(want)
    // blank lines of spaces are skipped; an empty file has none
    const blank = await file(tmp, "blank.jsonl", "a\n  \n\nb\n")
    const got: { text: string; n: number }[] = []
    for await (const line of results.linesOf(blank)) got.push(line)
    expect(got).toEqual([
      { text: "a", n: 1 },
      { text: "b", n: 4 },
    ])
    const empty = await file(tmp, "empty.jsonl", "")
    for await (const line of results.linesOf(empty)) throw new Error(`a line in an empty file: ${line.text}`)
  })
})
