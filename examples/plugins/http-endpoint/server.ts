/**
 * A toy endpoint for trying the http-endpoint example: `bun server.ts` (port 8080, or PORT).
 * It answers every prompt with a label picked from its words, in the reply shape the job expects.
 */
const port = Number(process.env.PORT ?? 8080)

function label(prompt: string): string {
  if (/charge|invoice|vat|refund|price/i.test(prompt)) return "billing"
  if (/crash|error|broken|fails|expired/i.test(prompt)) return "bug"
  return "question"
}

Bun.serve({
  hostname: "127.0.0.1",
  port,
  async fetch(request) {
    if (request.method !== "POST") return new Response("POST a JSON body", { status: 405 })
    const body = (await request.json()) as { prompt?: unknown }
    if (typeof body.prompt !== "string") return Response.json({ error: "no prompt" }, { status: 400 })
    const text = label(body.prompt)
    return Response.json({
      output: { text },
      usage: { input_tokens: Math.ceil(body.prompt.length / 4), output_tokens: 1 },
    })
  },
})
console.log(`listening on http://127.0.0.1:${port}/generate`)
