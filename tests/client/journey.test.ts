// A frontend's first day with Chronicle: a client generated from /openapi.json
// (openapi-typescript + openapi-fetch) drives a whole journey against the real server.
// Type-checked with `tsc` against the generated types before it runs, so a document that
// does not describe what the server sends fails here at compile time, and a server that
// does not do what the document says fails at run time.
//
// Run by tests/e2e/generated_client.rs, which starts the server, an SMTP sink and a
// mailbox endpoint, and passes CHRONICLE_URL and MAILBOX_URL.
import { test } from "node:test";
import assert from "node:assert/strict";
import createClient from "openapi-fetch";
import type { paths } from "./generated/schema.js";

const baseUrl = process.env.CHRONICLE_URL ?? "";
const mailbox = process.env.MAILBOX_URL ?? "";
const client = createClient<paths>({ baseUrl });

const bearer = (token: string) => ({ Authorization: `Bearer ${token}` });

/** The 6-digit code of the newest mail to `email` whose subject contains `subject`. */
async function codeFor(email: string, subject: string): Promise<string> {
  const res = await fetch(
    `${mailbox}/code?to=${encodeURIComponent(email)}&subject=${encodeURIComponent(subject)}`,
  );
  assert.equal(res.status, 200, "the mailbox has the mail");
  return (await res.text()).trim();
}

test("a user's journey through the generated client", async () => {
  assert.ok(baseUrl && mailbox, "CHRONICLE_URL and MAILBOX_URL are set");
  const email = `ts-${Date.now()}@example.com`;
  const password = "a-long-and-uncommon-passphrase-9";

  const registered = await client.POST("/api/v1/auth/register", {
    body: { email, password, display_name: "Ada" },
  });
  assert.equal(registered.response.status, 202);
  assert.equal(registered.data?.code, 202);
  assert.ok(registered.data?.data.message);

  const code = await codeFor(email, "erif");
  assert.match(code, /^\d{6}$/);
  const verified = await client.POST("/api/v1/auth/verify-email", { body: { email, code } });
  assert.equal(verified.response.status, 200, JSON.stringify(verified.error));

  const login = await client.POST("/api/v1/auth/login", { body: { email, password } });
  assert.equal(login.response.status, 200, JSON.stringify(login.error));
  const first = login.data?.data;
  assert.ok(first?.access_token && first.refresh_token);
  assert.equal(first.token_type, "Bearer");

  const me = await client.GET("/api/v1/users/me", { headers: bearer(first.access_token) });
  assert.equal(me.response.status, 200);
  assert.equal(me.data?.data.email, email);

  const refreshed = await client.POST("/api/v1/auth/refresh", {
    body: { refresh_token: first.refresh_token },
  });
  assert.equal(refreshed.response.status, 200, JSON.stringify(refreshed.error));
  const tokens = refreshed.data?.data;
  assert.ok(tokens?.access_token);
  assert.notEqual(tokens.refresh_token, first.refresh_token, "the refresh token rotates");
  const auth = bearer(tokens.access_token);

  const conversation = await client.POST("/api/v1/conversations", {
    headers: auth,
    body: { title: "Trip to Lisbon" },
  });
  assert.equal(conversation.response.status, 201, JSON.stringify(conversation.error));
  const id = conversation.data?.data.id;
  assert.ok(id);

  const posted = await client.POST("/api/v1/conversations/{id}/messages", {
    headers: auth,
    params: { path: { id } },
    body: { content: "Where should we eat?" },
  });
  assert.equal(posted.response.status, 201, JSON.stringify(posted.error));

  const messages = await client.GET("/api/v1/conversations/{id}/messages", {
    headers: auth,
    params: { path: { id } },
  });
  assert.equal(messages.response.status, 200);
  const contents = (messages.data?.data.items ?? []).map((m) => m.content);
  assert.deepEqual(contents, ["Where should we eat?"]);

  const usage = await client.POST("/api/v1/metrics", {
    headers: auth,
    body: { kind: "api_calls", amount: 3 },
  });
  assert.equal(usage.response.status, 202, JSON.stringify(usage.error));
  assert.ok(usage.data?.data.position);

  const report = await client.GET("/api/v1/usage", { headers: auth });
  assert.equal(report.response.status, 200);
  assert.ok(report.data?.data.plan.name);

  const sessions = await client.GET("/api/v1/users/me/sessions", { headers: auth });
  assert.equal(sessions.response.status, 200);
  assert.equal(sessions.data?.data.length, 1);

  const out = await client.POST("/api/v1/auth/logout", { headers: auth });
  assert.equal(out.response.status, 204);
  const after = await client.GET("/api/v1/users/me", { headers: auth });
  assert.equal(after.response.status, 401, "the old token is refused");
  assert.equal(after.error?.error, "token_invalid");
});
