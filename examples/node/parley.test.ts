// Runs the example against a live Parley at PARLEY_ADDR (host:port of gRPC),
// as scripts/test-clients.sh does: npm test (node --test).
import { strict as assert } from "node:assert";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { RpcError } from "@protobuf-ts/runtime-rpc";

import { ConnectRequest } from "../../gen/ts/parley/v1/chat";
import { Parley } from "./parley";

const addr = process.env.PARLEY_ADDR;
if (!addr && process.env.PARLEY_TEST_REQUIRE_SERVICES === "1") {
  throw new Error("PARLEY_ADDR is not set but PARLEY_TEST_REQUIRE_SERVICES=1");
}
const name = (p: string) => p + randomBytes(5).toString("hex");

describe("Parley from Node", { skip: addr ? false : "PARLEY_ADDR not set" }, () => {
  let ann: Parley;
  let bob: Parley;
  before(async () => {
    ann = new Parley(addr!);
    bob = new Parley(addr!);
    await ann.signUpOrLogin(name("node_ann_"), "correct-horse-battery");
    await bob.signUpOrLogin(name("node_bob_"), "correct-horse-battery");
  });
  after(() => {
    ann?.close();
    bob?.close();
  });

  it("sends and receives its own message", async () => {
    const room = await ann.findOrCreateRoom(name("node-room-"));
    const m = await ann.sendAndReceive(room.roomId, "hello from node", () => {});
    assert.equal(m.body, "hello from node");
    assert.equal(m.senderUsername, ann.user!.username);
    assert.ok(Number(m.seq) >= 1);
  });

  it("delivers to another member's stream in real time", async () => {
    const room = await ann.findOrCreateRoom(name("node-shared-"));
    assert.equal((await bob.findOrCreateRoom(room.name)).roomId, room.roomId);
    const abort = new AbortController();
    const call = bob.chat.connect({ ...bob.opts, abort: abort.signal });
    await call.requests.send(ConnectRequest.create({ frame: { oneofKind: "subscribe", subscribe: { roomId: room.roomId } } }));
    const frames = call.responses[Symbol.asyncIterator]();
    assert.equal((await frames.next()).value.frame.oneofKind, "subscribed");

    const sent = await ann.sendAndReceive(room.roomId, "hi bob", () => {});
    let got;
    for (;;) {
      const { value, done } = await frames.next();
      assert.ok(!done, "bob's stream ended");
      if (value.frame.oneofKind === "message") {
        got = value.frame.message;
        break;
      }
    }
    abort.abort();
    assert.equal(got.messageId, sent.messageId);
    assert.equal(got.body, "hi bob");
  });

  it("maps errors to status codes", async () => {
    await assert.rejects(async () => ann.rooms.getRoom({ roomId: "no-such-room" }, ann.opts), (e: unknown) => e instanceof RpcError && e.code === "NOT_FOUND");
    await assert.rejects(async () => ann.rooms.listRooms({ filter: 0, pageSize: 0, pageToken: "" }), (e: unknown) => e instanceof RpcError && e.code === "UNAUTHENTICATED");
  });
});
