// The Vercel AI SDK against an OpenAI-compatible endpoint, the way a JavaScript app uses it:
// generateText, streamText, and one tool call. Prints one JSON object with what came back.
//   node ai_sdk.mjs BASE_URL '{"reasoning": {...logit_bias}, "tool": {...logit_bias}}'
import { createOpenAICompatible } from "@ai-sdk/openai-compatible";
import { generateText, streamText, tool } from "ai";
import { z } from "zod";

const [baseURL, biasJson] = process.argv.slice(2);
const bias = JSON.parse(biasJson);

const gptOss = createOpenAICompatible({
  name: "gptoss",
  baseURL,
  apiKey: process.env.GPT_OSS_API_KEY, // sent as Authorization: Bearer
  headers: { "Modal-Key": "wk-test", "Modal-Secret": "ws-test" }, // Modal proxy auth
  includeUsage: true,
});
const model = gptOss.chatModel("llm");

const generated = await generateText({ model, prompt: "Hello!" });

const stream = streamText({ model, prompt: "Hello!" });
const parts = [];
for await (const part of stream.textStream) parts.push(part);

const reasoned = await generateText({
  model,
  prompt: "Hello!",
  providerOptions: { gptoss: { logit_bias: bias.reasoning } },
});

const called = await generateText({
  model,
  prompt: "What is the weather in Paris?",
  tools: {
    get_weather: tool({
      description: "Get the current weather for a city.",
      inputSchema: z.object({ city: z.string().describe("City name") }),
    }),
  },
  providerOptions: { gptoss: { logit_bias: bias.tool } },
});

console.log(
  JSON.stringify({
    text: generated.text,
    finishReason: generated.finishReason,
    streamed: parts,
    reasoning: reasoned.reasoningText ?? null,
    reasonedText: reasoned.text,
    toolCalls: called.toolCalls.map((c) => ({ name: c.toolName, input: c.input })),
    toolFinishReason: called.finishReason,
  }),
);
