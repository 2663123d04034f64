// Parley from Node.js with the generated TypeScript stubs (gen/ts, made by
// protobuf-ts) over @grpc/grpc-js: sign up or log in, find or create a public
// room and join it, open the Connect stream, subscribe, send, receive.
import { ChannelCredentials } from "@grpc/grpc-js";
import { GrpcTransport } from "@protobuf-ts/grpc-transport";
import { RpcError, type RpcOptions } from "@protobuf-ts/runtime-rpc";
import { randomBytes } from "node:crypto";

import { AuthServiceClient } from "../../gen/ts/parley/v1/auth.client";
import type { TokenPair, User } from "../../gen/ts/parley/v1/auth";
import { ChatServiceClient } from "../../gen/ts/parley/v1/chat.client";
import { ConnectRequest, type Message } from "../../gen/ts/parley/v1/chat";
import { RoomServiceClient } from "../../gen/ts/parley/v1/rooms.client";
import { RoomFilter, RoomVisibility, type Room } from "../../gen/ts/parley/v1/rooms";

/** Clients of the three services on one plaintext HTTP/2 connection. */
export class Parley {
  readonly transport: GrpcTransport;
  readonly auth: AuthServiceClient;
  readonly rooms: RoomServiceClient;
  readonly chat: ChatServiceClient;
  user?: User;
  tokens?: TokenPair;

  constructor(addr: string) {
    this.transport = new GrpcTransport({ host: addr, channelCredentials: ChannelCredentials.createInsecure() });
    this.auth = new AuthServiceClient(this.transport);
    this.rooms = new RoomServiceClient(this.transport);
    this.chat = new ChatServiceClient(this.transport);
  }

  /** Call options carrying the access token. */
  get opts(): RpcOptions {
    return { meta: { authorization: `Bearer ${this.tokens?.accessToken ?? ""}` } };
  }

  /** Signs username up; logs in instead when the name is taken. */
  async signUpOrLogin(username: string, password: string): Promise<User> {
    try {
      const { response } = await this.auth.signUp({ username, password, displayName: "" });
      [this.user, this.tokens] = [response.user, response.tokens];
    } catch (e) {
      if (!(e instanceof RpcError) || e.code !== "ALREADY_EXISTS") throw e;
      const { response } = await this.auth.login({ username, password });
      [this.user, this.tokens] = [response.user, response.tokens];
    }
    return this.user!;
  }

  /** Returns the public room called name (created if missing), joined. */
  async findOrCreateRoom(name: string): Promise<Room> {
    let room: Room | undefined;
    let pageToken = "";
    do {
      const { response } = await this.rooms.listRooms({ filter: RoomFilter.PUBLIC, pageSize: 100, pageToken }, this.opts);
      room = response.rooms.find((r) => r.name === name);
      pageToken = response.nextPageToken;
    } while (!room && pageToken);
    if (!room) {
      const { response } = await this.rooms.createRoom({ name, topic: "", visibility: RoomVisibility.PUBLIC }, this.opts);
      room = response.room!;
    }
    await this.rooms.joinRoom({ roomId: room.roomId }, this.opts);
    return room;
  }

  /**
   * Subscribes to roomId on a new Connect stream, sends body, and resolves
   * with the message once it is both acknowledged (durable) and delivered
   * back on the stream. Every frame is passed to log.
   */
  async sendAndReceive(roomId: string, body: string, log: (line: string) => void = console.log): Promise<Message> {
    const clientMsgId = "node-example-" + randomBytes(8).toString("hex");
    const abort = new AbortController();
    const call = this.chat.connect({ ...this.opts, abort: abort.signal, timeout: 30_000 });
    const send = (frame: ConnectRequest["frame"]) => call.requests.send(ConnectRequest.create({ frame }));
    await send({ oneofKind: "subscribe", subscribe: { roomId } });
    let acked: Message | undefined;
    let delivered: Message | undefined;
    try {
      for await (const resp of call.responses) {
        const f = resp.frame;
        switch (f.oneofKind) {
          case "subscribed":
            log(`subscribed at seq ${f.subscribed.head?.seq ?? "0"}`);
            await send({ oneofKind: "send", send: { roomId, clientMsgId, body } });
            break;
          case "sendAck":
            if (f.sendAck.error) throw new Error(`send refused: ${f.sendAck.error.message}`);
            acked = f.sendAck.message;
            log(`ack seq ${acked?.seq}`);
            break;
          case "message":
            log(`message #${f.message.seq} ${f.message.senderUsername}: ${f.message.body}`);
            if (f.message.clientMsgId === clientMsgId) delivered = f.message;
            break;
          case "subscribeError":
            throw new Error(`subscribe: ${f.subscribeError.error?.message}`);
        }
        if (acked && delivered) return delivered;
      }
    } finally {
      await call.requests.complete().catch(() => {});
      abort.abort();
    }
    throw new Error("stream ended before the message came back");
  }

  close(): void {
    this.transport.close();
  }
}

/** node dist/examples/node/parley.js [--addr host:port] [--user name] [--room name] [--text text] */
async function main(argv: string[]): Promise<void> {
  const arg = (name: string, def: string) => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 && i + 1 < argv.length ? argv[i + 1] : def;
  };
  const p = new Parley(arg("addr", process.env.PARLEY_ADDR ?? "127.0.0.1:8080"));
  try {
    const user = await p.signUpOrLogin(arg("user", "node_" + randomBytes(4).toString("hex")), arg("password", process.env.PARLEY_PASSWORD ?? "correct-horse-battery"));
    console.log(`logged in ${user.username} (${user.userId})`);
    const room = await p.findOrCreateRoom(arg("room", "lobby"));
    console.log(`joined room ${room.name} (${room.roomId})`);
    await p.sendAndReceive(room.roomId, arg("text", "hello from the Node example"));
  } finally {
    p.close();
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
