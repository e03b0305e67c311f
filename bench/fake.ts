/** The fake OpenAI server in a process of its own, so the contenders do not share its CPU. Prints its URL. */
import { startFake } from "../test/lib/fake-openai.ts"

const latencyMs = Number(process.argv[2] ?? 0)
const fake = await startFake({ latencyMs, validate: false })
console.log(fake.url)
process.on("SIGTERM", () => fake.stop().then(() => process.exit(0)))
