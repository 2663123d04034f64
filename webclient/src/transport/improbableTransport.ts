// An RpcTransport for protobuf-ts generated clients over @improbable-eng/grpc-web.
//
// improbable's client works with google-protobuf style message objects
// (serializeBinary / deserializeBinary); protobuf-ts messages are plain
// objects with a MessageType. Tiny shims bridge the two, so google-protobuf is
// never bundled. Unary calls use grpc-web over HTTP by default, streaming calls
// use improbable's WebSocket transport (the only browser transport that can
// carry client and bidi streams).
import { grpc } from '@improbable-eng/grpc-web';
import {
  ClientStreamingCall,
  Deferred,
  DuplexStreamingCall,
  RpcError,
  RpcOutputStreamController,
  ServerStreamingCall,
  UnaryCall,
  mergeRpcOptions,
  type MethodInfo,
  type RpcInputStream,
  type RpcMetadata,
  type RpcOptions,
  type RpcStatus,
  type RpcTransport,
} from '@protobuf-ts/runtime-rpc';

/** gRPC status code names as protobuf-ts writes them in RpcError.code. */
export const codeNames: readonly string[] = [
  'OK', 'CANCELLED', 'UNKNOWN', 'INVALID_ARGUMENT', 'DEADLINE_EXCEEDED', 'NOT_FOUND',
  'ALREADY_EXISTS', 'PERMISSION_DENIED', 'RESOURCE_EXHAUSTED', 'FAILED_PRECONDITION',
  'ABORTED', 'OUT_OF_RANGE', 'UNIMPLEMENTED', 'INTERNAL', 'UNAVAILABLE', 'DATA_LOSS',
  'UNAUTHENTICATED',
];

export function codeName(code: number): string {
  return codeNames[code] ?? 'UNKNOWN';
}

/** The part of improbable's `grpc.client` this transport uses (replaceable in tests). */
export type ClientFactory = (
  method: grpc.MethodDefinition<grpc.ProtobufMessage, grpc.ProtobufMessage>,
  props: grpc.ClientRpcOptions,
) => grpc.Client<grpc.ProtobufMessage, grpc.ProtobufMessage>;

export interface ImprobableTransportOptions {
  /** Origin (and optional path prefix) of the server, e.g. "" for same origin or "http://127.0.0.1:8080". */
  baseUrl: string;
  /** Transport for unary and server-streaming calls (default: grpc-web over HTTP). */
  httpTransport?: grpc.TransportFactory;
  /** Transport for client-streaming and bidi calls (default: improbable's WebSocket transport). */
  streamTransport?: grpc.TransportFactory;
  /** Defaults to improbable's grpc.client. */
  client?: ClientFactory;
  debug?: boolean;
  /** Default RpcOptions merged into every call (meta, timeout, interceptors...). */
  defaults?: Partial<RpcOptions>;
}

/** Wraps a protobuf-ts message as the object improbable expects. */
export class MessageShim<T extends object> implements grpc.ProtobufMessage {
  constructor(readonly info: MethodInfo['I'] | MethodInfo['O'], readonly value: T) {}
  serializeBinary(): Uint8Array {
    return this.info.toBinary(this.value);
  }
  toObject(): {} {
    return this.value;
  }
}

/** An improbable method definition whose message classes are shims of the protobuf-ts types. */
export function methodDefinition(method: MethodInfo): grpc.MethodDefinition<grpc.ProtobufMessage, grpc.ProtobufMessage> {
  const shimClass = (info: MethodInfo['I']) => {
    const cls = function () {
      return new MessageShim(info, info.create());
    } as unknown as grpc.ProtobufMessageClass<grpc.ProtobufMessage>;
    cls.deserializeBinary = (bytes: Uint8Array) => new MessageShim(info, info.fromBinary(bytes, { readUnknownField: false }));
    return cls;
  };
  return {
    methodName: method.name,
    service: { serviceName: method.service.typeName },
    requestStream: method.clientStreaming,
    responseStream: method.serverStreaming,
    requestType: shimClass(method.I),
    responseType: shimClass(method.O),
  };
}

/** RpcMetadata → improbable (BrowserHeaders) metadata. */
export function toGrpcMetadata(meta: RpcMetadata | undefined, timeoutMs?: number): grpc.Metadata {
  const md = new grpc.Metadata();
  for (const [k, v] of Object.entries(meta ?? {})) {
    for (const one of Array.isArray(v) ? v : [v]) md.append(k, one);
  }
  if (timeoutMs !== undefined && timeoutMs > 0) md.set('grpc-timeout', `${Math.ceil(timeoutMs)}m`);
  return md;
}

/** improbable metadata → RpcMetadata (repeated keys become arrays). */
export function fromGrpcMetadata(md: grpc.Metadata | undefined): RpcMetadata {
  const out: RpcMetadata = {};
  md?.forEach((key: string, values: string[]) => {
    out[key] = values.length === 1 ? values[0] : values;
  });
  return out;
}

/** grpc-message is percent-encoded on the wire; decode it if it still is. */
export function decodeGrpcMessage(message: string | undefined): string {
  if (!message || !/%[0-9A-Fa-f]{2}/.test(message)) return message ?? '';
  try {
    return decodeURIComponent(message);
  } catch {
    return message;
  }
}

function timeoutOf(opt: RpcOptions): number | undefined {
  if (opt.timeout === undefined) return undefined;
  return typeof opt.timeout === 'number' ? opt.timeout : opt.timeout.getTime() - Date.now();
}

export class ImprobableTransport implements RpcTransport {
  private readonly opts: ImprobableTransportOptions;

  constructor(opts: ImprobableTransportOptions) {
    this.opts = opts;
  }

  mergeOptions(options?: Partial<RpcOptions>): RpcOptions {
    return mergeRpcOptions(this.opts.defaults ?? {}, options);
  }

  unary<I extends object, O extends object>(method: MethodInfo<I, O>, input: I, options: RpcOptions): UnaryCall<I, O> {
    const c = this.start(method, options, this.opts.httpTransport ?? grpc.CrossBrowserHttpTransport({}));
    c.send(input);
    c.finish();
    const response = new Deferred<O>();
    c.responses.onNext((msg, err, done) => {
      if (msg) response.resolvePending(msg);
      else if (err) response.rejectPending(err);
      else if (done) response.rejectPending(new RpcError('no response message', 'DATA_LOSS', {}));
    });
    return new UnaryCall(method, c.requestHeaders, input, c.headers, response.promise, c.status, c.trailers);
  }

  serverStreaming<I extends object, O extends object>(method: MethodInfo<I, O>, input: I, options: RpcOptions): ServerStreamingCall<I, O> {
    const c = this.start(method, options, this.opts.httpTransport ?? grpc.CrossBrowserHttpTransport({}));
    c.send(input);
    c.finish();
    return new ServerStreamingCall(method, c.requestHeaders, input, c.headers, c.responses, c.status, c.trailers);
  }

  clientStreaming<I extends object, O extends object>(method: MethodInfo<I, O>, options: RpcOptions): ClientStreamingCall<I, O> {
    const c = this.start(method, options, this.opts.streamTransport ?? grpc.WebsocketTransport());
    const response = new Deferred<O>();
    c.responses.onNext((msg, err, done) => {
      if (msg) response.resolvePending(msg);
      else if (err) response.rejectPending(err);
      else if (done) response.rejectPending(new RpcError('no response message', 'DATA_LOSS', {}));
    });
    return new ClientStreamingCall(method, c.requestHeaders, c.input, c.headers, response.promise, c.status, c.trailers);
  }

  duplex<I extends object, O extends object>(method: MethodInfo<I, O>, options: RpcOptions): DuplexStreamingCall<I, O> {
    const c = this.start(method, options, this.opts.streamTransport ?? grpc.WebsocketTransport());
    return new DuplexStreamingCall(method, c.requestHeaders, c.input, c.headers, c.responses, c.status, c.trailers);
  }

  /** Starts an improbable client for one call and wires its callbacks to protobuf-ts deferreds. */
  private start<I extends object, O extends object>(method: MethodInfo<I, O>, options: RpcOptions, transport: grpc.TransportFactory) {
    const requestHeaders: RpcMetadata = { ...(options.meta ?? {}) };
    const headers = new Deferred<RpcMetadata>();
    const status = new Deferred<RpcStatus>();
    const trailers = new Deferred<RpcMetadata>();
    const responses = new RpcOutputStreamController<O>();
    const make = this.opts.client ?? (grpc.client as unknown as ClientFactory);
    const client = make(methodDefinition(method as unknown as MethodInfo), {
      host: this.opts.baseUrl,
      transport,
      debug: this.opts.debug ?? false,
    });
    let finished = false;
    let started = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const fail = (err: RpcError) => {
      if (finished) return;
      finished = true;
      if (timer) clearTimeout(timer);
      options.abort?.removeEventListener('abort', onAbort);
      err.methodName = method.name;
      err.serviceName = method.service.typeName;
      headers.rejectPending(err);
      status.rejectPending(err);
      trailers.rejectPending(err);
      if (!responses.closed) responses.notifyError(err);
    };
    const onAbort = () => {
      client.close();
      fail(new RpcError('the call was cancelled', 'CANCELLED', {}));
    };
    client.onHeaders((md) => headers.resolvePending(fromGrpcMetadata(md)));
    client.onMessage((m) => {
      if (!finished && !responses.closed) responses.notifyMessage((m as MessageShim<O>).value);
    });
    client.onEnd((code, message, md) => {
      if (finished) return;
      const meta = fromGrpcMetadata(md);
      if (code === grpc.Code.OK) {
        finished = true;
        if (timer) clearTimeout(timer);
        options.abort?.removeEventListener('abort', onAbort);
        headers.resolvePending({});
        status.resolvePending({ code: 'OK', detail: message ?? '' });
        trailers.resolvePending(meta);
        if (!responses.closed) responses.notifyComplete();
        return;
      }
      fail(new RpcError(decodeGrpcMessage(message) || codeName(code), codeName(code), meta));
    });
    const timeout = timeoutOf(options);
    if (options.abort?.aborted) {
      queueMicrotask(onAbort);
    } else {
      options.abort?.addEventListener('abort', onAbort);
      if (timeout !== undefined) {
        timer = setTimeout(() => {
          client.close();
          fail(new RpcError('deadline exceeded', 'DEADLINE_EXCEEDED', {}));
        }, Math.max(0, timeout));
      }
      client.start(toGrpcMetadata(options.meta, timeout));
      started = true;
    }
    const send = (message: I) => {
      if (started && !finished) client.send(new MessageShim(method.I, message));
    };
    const finish = () => {
      if (started && !finished) client.finishSend();
    };
    const input: RpcInputStream<I> = {
      send: async (message: I) => {
        if (finished) throw new RpcError('the call has ended', 'CANCELLED', {});
        send(message);
      },
      complete: async () => finish(),
    };
    return { requestHeaders, headers: headers.promise, status: status.promise, trailers: trailers.promise, responses, input, send, finish };
  }
}
