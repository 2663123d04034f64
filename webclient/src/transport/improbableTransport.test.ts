import { describe, expect, it } from 'vitest';
import { grpc } from '@improbable-eng/grpc-web';
import { RpcError } from '@protobuf-ts/runtime-rpc';
import { AuthServiceClient } from '@gen/parley/v1/auth.client';
import { ChatServiceClient } from '@gen/parley/v1/chat.client';
import { LoginRequest, LoginResponse } from '@gen/parley/v1/auth';
import { ConnectRequest, ConnectResponse } from '@gen/parley/v1/chat';
import {
  ImprobableTransport,
  codeName,
  fromGrpcMetadata,
  methodDefinition,
  toGrpcMetadata,
  type ClientFactory,
} from './improbableTransport';

type Msg = grpc.ProtobufMessage;

/** A fake improbable client: records what the transport does, lets the test play the server. */
class FakeClient {
  started?: grpc.Metadata;
  sent: Uint8Array[] = [];
  finished = false;
  closed = false;
  private h?: (md: grpc.Metadata) => void;
  private m?: (msg: Msg) => void;
  private e?: (code: grpc.Code, msg: string, md: grpc.Metadata) => void;
  constructor(
    readonly def: grpc.MethodDefinition<Msg, Msg>,
    readonly props: grpc.ClientRpcOptions,
  ) {}
  start(md?: grpc.Metadata.ConstructorArg) {
    this.started = md as grpc.Metadata;
  }
  send(msg: Msg) {
    this.sent.push(msg.serializeBinary());
  }
  finishSend() {
    this.finished = true;
  }
  close() {
    this.closed = true;
  }
  onHeaders(cb: (md: grpc.Metadata) => void) {
    this.h = cb;
  }
  onMessage(cb: (msg: Msg) => void) {
    this.m = cb;
  }
  onEnd(cb: (code: grpc.Code, msg: string, md: grpc.Metadata) => void) {
    this.e = cb;
  }
  // server side
  headers(md: Record<string, string>) {
    this.h?.(new grpc.Metadata(md));
  }
  reply(bytes: Uint8Array) {
    this.m?.(this.def.responseType.deserializeBinary(bytes));
  }
  end(code: grpc.Code, msg = '', md: Record<string, string> = {}) {
    this.e?.(code, msg, new grpc.Metadata(md));
  }
}

function setup() {
  const clients: FakeClient[] = [];
  const factory: ClientFactory = (def, props) => {
    const c = new FakeClient(def, props);
    clients.push(c);
    return c as unknown as grpc.Client<Msg, Msg>;
  };
  const transport = new ImprobableTransport({ baseUrl: 'http://parley.test', client: factory });
  return { clients, transport };
}

const tick = () => new Promise((r) => setTimeout(r, 0));

describe('metadata and status mapping', () => {
  it('maps codes to protobuf-ts names', () => {
    expect(codeName(0)).toBe('OK');
    expect(codeName(3)).toBe('INVALID_ARGUMENT');
    expect(codeName(14)).toBe('UNAVAILABLE');
    expect(codeName(16)).toBe('UNAUTHENTICATED');
    expect(codeName(99)).toBe('UNKNOWN');
  });
  it('converts metadata both ways, keeping repeated values', () => {
    const md = toGrpcMetadata({ authorization: 'Bearer t', 'x-a': ['1', '2'] }, 1500);
    expect(md.get('authorization')).toEqual(['Bearer t']);
    expect(md.get('x-a')).toEqual(['1', '2']);
    expect(md.get('grpc-timeout')).toEqual(['1500m']);
    expect(fromGrpcMetadata(md)).toMatchObject({ authorization: 'Bearer t', 'x-a': ['1', '2'] });
  });
  it('builds method definitions whose shims frame protobuf-ts messages', () => {
    const mi = new AuthServiceClient(setup().transport).methods[1];
    const def = methodDefinition(mi!);
    expect(def.methodName).toBe('Login');
    expect(def.service.serviceName).toBe('parley.v1.AuthService');
    expect(def.requestStream).toBe(false);
    const bytes = LoginResponse.toBinary(LoginResponse.create({ user: { username: 'ann' } }));
    const shim = def.responseType.deserializeBinary(bytes);
    expect(shim.toObject()).toMatchObject({ user: { username: 'ann' } });
    expect(LoginResponse.fromBinary(shim.serializeBinary()).user?.username).toBe('ann');
  });
});

describe('unary calls', () => {
  it('sends the request with metadata and resolves the response, headers and status', async () => {
    const { clients, transport } = setup();
    const auth = new AuthServiceClient(transport);
    const call = auth.login({ username: 'ann', password: 'secret-pw' }, { meta: { authorization: 'Bearer abc' } });
    const c = clients[0];
    expect(c.props.host).toBe('http://parley.test');
    expect(c.def.methodName).toBe('Login');
    expect(c.started?.get('authorization')).toEqual(['Bearer abc']);
    expect(LoginRequest.fromBinary(c.sent[0])).toEqual({ username: 'ann', password: 'secret-pw' });
    expect(c.finished).toBe(true);
    c.headers({ 'x-req': 'r1' });
    c.reply(LoginResponse.toBinary(LoginResponse.create({ user: { userId: 'u1', username: 'ann' } })));
    c.end(grpc.Code.OK, '', { 'x-trailer': 't' });
    expect((await call.response).user?.username).toBe('ann');
    expect(await call.headers).toMatchObject({ 'x-req': 'r1' });
    expect(await call.status).toEqual({ code: 'OK', detail: '' });
    expect(await call.trailers).toMatchObject({ 'x-trailer': 't' });
  });

  it('turns an error status into an RpcError with code name and message', async () => {
    const { clients, transport } = setup();
    const call = new AuthServiceClient(transport).login({ username: 'ann', password: 'x' });
    clients[0].end(grpc.Code.Unauthenticated, 'wrong username or password');
    const err = await call.response.catch((e) => e);
    expect(err).toBeInstanceOf(RpcError);
    expect(err.code).toBe('UNAUTHENTICATED');
    expect(err.message).toBe('wrong username or password');
    expect(err.methodName).toBe('Login');
    await expect(call.status).rejects.toBeInstanceOf(RpcError);
  });

  it('cancels through an AbortSignal', async () => {
    const { clients, transport } = setup();
    const ac = new AbortController();
    const call = new AuthServiceClient(transport).getMe({}, { abort: ac.signal });
    ac.abort();
    const err = await call.response.catch((e) => e);
    expect(err.code).toBe('CANCELLED');
    expect(clients[0].closed).toBe(true);
    clients[0].end(grpc.Code.OK); // a late end is ignored
  });

  it('fails with DEADLINE_EXCEEDED after the timeout and sends grpc-timeout', async () => {
    const { clients, transport } = setup();
    const call = new AuthServiceClient(transport).getMe({}, { timeout: 10 });
    expect(clients[0].started?.get('grpc-timeout')).toEqual(['10m']);
    const err = await call.response.catch((e) => e);
    expect(err.code).toBe('DEADLINE_EXCEEDED');
    expect(clients[0].closed).toBe(true);
  });
});

describe('bidi Connect stream', () => {
  it('carries frames both ways, half-closes and completes', async () => {
    const { clients, transport } = setup();
    const call = new ChatServiceClient(transport).connect({ meta: { authorization: 'Bearer t' } });
    const c = clients[0];
    expect(c.def.requestStream && c.def.responseStream).toBe(true);
    expect(c.started?.get('authorization')).toEqual(['Bearer t']);
    await call.requests.send({ frame: { oneofKind: 'ping', ping: { nonce: '7' } } });
    await call.requests.send({ frame: { oneofKind: 'subscribe', subscribe: { roomId: 'r1' } } });
    expect(c.sent.map((b) => ConnectRequest.fromBinary(b).frame.oneofKind)).toEqual(['ping', 'subscribe']);
    const got: ConnectResponse[] = [];
    call.responses.onMessage((m) => got.push(m));
    c.reply(ConnectResponse.toBinary({ frame: { oneofKind: 'pong', pong: { nonce: '7' } } }));
    c.reply(ConnectResponse.toBinary({ frame: { oneofKind: 'subscribed', subscribed: { roomId: 'r1', head: { epoch: 'e', seq: '3' } } } }));
    expect(got.map((f) => f.frame.oneofKind)).toEqual(['pong', 'subscribed']);
    await call.requests.complete();
    expect(c.finished).toBe(true);
    let completed = false;
    call.responses.onComplete(() => (completed = true));
    c.end(grpc.Code.OK);
    await tick();
    expect(completed).toBe(true);
    expect((await call.status).code).toBe('OK');
  });

  it('ends the response stream with an RpcError on a failed stream and refuses further sends', async () => {
    const { clients, transport } = setup();
    const call = new ChatServiceClient(transport).connect();
    let err: Error | undefined;
    call.responses.onError((e) => (err = e));
    clients[0].end(grpc.Code.Unavailable, 'server shutting down');
    expect((err as RpcError).code).toBe('UNAVAILABLE');
    await expect(call.requests.send({ frame: { oneofKind: undefined } })).rejects.toBeInstanceOf(RpcError);
  });

  it('aborting closes the WebSocket client and errors the stream as CANCELLED', async () => {
    const { clients, transport } = setup();
    const ac = new AbortController();
    const call = new ChatServiceClient(transport).connect({ abort: ac.signal });
    const it = call.responses[Symbol.asyncIterator]();
    const next = it.next().catch((e) => e);
    ac.abort();
    expect(((await next) as RpcError).code).toBe('CANCELLED');
    expect(clients[0].closed).toBe(true);
  });
});
