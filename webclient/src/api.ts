// The generated clients on the browser transport, and the signed-in session:
// tokens kept in localStorage, sent as `authorization: Bearer` metadata, and
// refreshed silently (once, for all callers and tabs) when the server says
// UNAUTHENTICATED. Refresh tokens rotate: each works once, so two refreshes
// with the same token would revoke the session; a Web Lock serializes them
// across tabs and a tab re-reads the stored session before using its own.
import { RpcError, type RpcOptions, type UnaryCall } from '@protobuf-ts/runtime-rpc';
import { AuthServiceClient } from '@gen/parley/v1/auth.client';
import { RoomServiceClient } from '@gen/parley/v1/rooms.client';
import { ChatServiceClient } from '@gen/parley/v1/chat.client';
import type { TokenPair, User } from '@gen/parley/v1/auth';
import { Timestamp } from '@gen/google/protobuf/timestamp';
import { ImprobableTransport } from './transport/improbableTransport';

const transport = new ImprobableTransport({ baseUrl: window.location.origin });
export const authClient = new AuthServiceClient(transport);
export const roomClient = new RoomServiceClient(transport);
export const chatClient = new ChatServiceClient(transport);

export interface Session {
  user: User;
  accessToken: string;
  /** ms since the epoch */
  accessExpires: number;
  refreshToken: string;
}

const KEY = 'parley.session';

function readStored(): Session | null {
  try {
    const raw = localStorage.getItem(KEY);
    return raw ? (JSON.parse(raw) as Session) : null;
  } catch {
    return null;
  }
}

type Listener = (s: Session | null) => void;
let current: Session | null = readStored();
const listeners = new Set<Listener>();

function publish(s: Session | null) {
  current = s;
  if (s) localStorage.setItem(KEY, JSON.stringify(s));
  else localStorage.removeItem(KEY);
  for (const l of listeners) l(s);
}

window.addEventListener('storage', (e) => {
  if (e.key !== KEY) return;
  current = readStored();
  for (const l of listeners) l(current);
});

export const session = {
  get: () => current,
  subscribe(l: Listener) {
    listeners.add(l);
    return () => listeners.delete(l);
  },
  start(user: User, tokens: TokenPair) {
    publish(toSession(user, tokens));
  },
  clear() {
    publish(null);
  },
};

function toSession(user: User, t: TokenPair): Session {
  return {
    user,
    accessToken: t.accessToken,
    accessExpires: t.accessTokenExpireTime ? Timestamp.toDate(t.accessTokenExpireTime).getTime() : Date.now() + 60_000,
    refreshToken: t.refreshToken,
  };
}

/** Thrown when the session cannot be renewed: the user must sign in again. */
export class SessionExpired extends Error {
  constructor() {
    super('Your session has expired. Please sign in again.');
  }
}

let refreshing: Promise<Session> | null = null;

/**
 * Exchanges the refresh token for a new pair, once for all concurrent callers.
 * `stale` is the access token the caller found rejected: if the stored session
 * already has another one (another tab or call refreshed), that one is used.
 */
export function refreshSession(stale?: string): Promise<Session> {
  if (refreshing) return refreshing;
  const run = async (): Promise<Session> => {
    const stored = readStored();
    if (stored && stale !== undefined && stored.accessToken !== stale && stored.accessExpires > Date.now() + 5_000) {
      publish(stored);
      return stored;
    }
    const s = stored ?? current;
    if (!s) throw new SessionExpired();
    try {
      const { response } = await authClient.refresh({ refreshToken: s.refreshToken }, { timeout: 15_000 });
      if (!response.tokens) throw new SessionExpired();
      const next = toSession(s.user, response.tokens);
      publish(next);
      return next;
    } catch (e) {
      if (e instanceof RpcError && (e.code === 'UNAUTHENTICATED' || e.code === 'INVALID_ARGUMENT' || e.code === 'NOT_FOUND')) {
        publish(null);
        throw new SessionExpired();
      }
      throw e;
    }
  };
  const locks = (navigator as Navigator & { locks?: LockManager }).locks;
  refreshing = ((locks ? locks.request('parley.refresh', run) : run()) as Promise<Session>).finally(() => {
    refreshing = null;
  });
  return refreshing!;
}

/** A fresh access token (refreshed first if it is about to expire). */
export async function accessToken(): Promise<string> {
  const s = current;
  if (!s) throw new SessionExpired();
  if (s.accessExpires - Date.now() < 10_000) return (await refreshSession(s.accessToken)).accessToken;
  return s.accessToken;
}

export const bearer = (token: string): RpcOptions => ({ meta: { authorization: `Bearer ${token}` } });

/**
 * Calls a unary RPC with the session's token; on UNAUTHENTICATED refreshes the
 * token once and calls again.
 */
export async function call<I extends object, O extends object>(
  rpc: (opts: RpcOptions) => UnaryCall<I, O>,
  opts: RpcOptions = {},
): Promise<O> {
  const token = await accessToken();
  const withToken = (t: string): RpcOptions => ({ timeout: 20_000, ...opts, meta: { ...opts.meta, authorization: `Bearer ${t}` } });
  try {
    return (await rpc(withToken(token))).response;
  } catch (e) {
    if (!(e instanceof RpcError) || e.code !== 'UNAUTHENTICATED') throw e;
    const fresh = await refreshSession(token);
    return (await rpc(withToken(fresh.accessToken))).response;
  }
}

export async function logout(): Promise<void> {
  const s = current;
  publish(null);
  if (s) {
    try {
      await authClient.logout({ refreshToken: s.refreshToken }, { ...bearer(s.accessToken), timeout: 5_000 });
    } catch {
      // Signed out locally either way; the refresh token expires on its own.
    }
  }
}

/** An error in words a person understands. */
export function describeError(e: unknown): string {
  if (e instanceof SessionExpired) return e.message;
  if (e instanceof RpcError) {
    switch (e.code) {
      case 'UNAVAILABLE':
      case 'UNKNOWN':
      case 'INTERNAL':
        return "Can't reach Parley right now. Check your connection and try again.";
      case 'DEADLINE_EXCEEDED':
        return 'Parley took too long to answer. Please try again.';
      case 'RESOURCE_EXHAUSTED':
        return "You're going a bit fast. Wait a moment and try again.";
      case 'PERMISSION_DENIED':
        return "You don't have access to that.";
      case 'NOT_FOUND':
        return "That doesn't exist (or you can't see it).";
      case 'UNAUTHENTICATED':
        return 'Please sign in again.';
      case 'CANCELLED':
        return 'Cancelled.';
      case 'UNIMPLEMENTED':
        return 'This server does not support that yet.';
      default: {
        const f = fieldError(e);
        if (f) return `${humanField(f.field)} ${f.reason}`;
        return e.message ? capitalize(e.message) : 'Something went wrong.';
      }
    }
  }
  if (e instanceof Error && e.message) return e.message;
  return 'Something went wrong.';
}

/** An INVALID_ARGUMENT error's "field: reason" split. */
export function fieldError(e: unknown): { field: string; reason: string } | null {
  if (!(e instanceof RpcError) || e.code !== 'INVALID_ARGUMENT') return null;
  const m = /^([a-z_.]+): (.+)$/.exec(e.message);
  return m ? { field: m[1], reason: m[2] } : null;
}

const humanField = (f: string) => capitalize(f.split('.').pop()!.replace(/_/g, ' '));
const capitalize = (s: string) => (s ? s[0].toUpperCase() + s.slice(1) : s);
