// The chat engine: one bidi Connect stream for every joined room, the rooms
// with their unread counts, each room's timeline, own messages in flight,
// typing and presence. React reads it through useSyncExternalStore.
//
// Never lose or double a message on screen: messages are placed by seq and
// deduplicated (timeline.ts); every room keeps its resume position (epoch,
// seq), sent as Subscribe.resume_from when the stream is re-opened after a
// failure (exponential backoff), so the server replays what was missed; an
// epoch change or ResyncRequired reloads the room from history.
import { RpcError, type DuplexStreamingCall } from '@protobuf-ts/runtime-rpc';
import type { ConnectRequest, ConnectResponse, RoomState } from '@gen/parley/v1/chat';
import { RoomFilter, RoomVisibility, type Member, type Room } from '@gen/parley/v1/rooms';
import type { User } from '@gen/parley/v1/auth';
import { Timestamp } from '@gen/google/protobuf/timestamp';
import { codeName } from '../transport/improbableTransport';
import { accessToken, bearer, call, chatClient, describeError, refreshSession, roomClient, SessionExpired } from '../api';
import {
  applyHead,
  applyMessage,
  emptyTimeline,
  fromProto,
  mergeHistory,
  newestSeq,
  resetEpoch,
  resumePosition,
  withdraw,
  type ChatMessage,
  type Timeline,
} from './timeline';

export type ConnState = 'connecting' | 'online' | 'reconnecting';

export interface RoomEntry {
  room: Room;
  unread: number;
  /** The user's read position (seq). */
  lastRead: number;
  /** Highest seq accounted for in `unread`. */
  counted: number;
  lastMessage?: ChatMessage;
}

export interface PendingMessage {
  clientMsgId: string;
  roomId: string;
  body: string;
  state: 'sending' | 'failed';
  error?: string;
  time: number;
}

export interface TypingUser {
  userId: string;
  username: string;
  expires: number;
}

export interface MemberEntry {
  user: User;
  online: boolean;
}

export interface ChatState {
  conn: ConnState;
  /** Set once the stream has been up at least once. */
  everOnline: boolean;
  rooms: Record<string, RoomEntry>;
  roomsLoaded: boolean;
  roomsError?: string;
  timelines: Record<string, Timeline>;
  /** Own messages not yet acknowledged, by room. */
  pending: Record<string, PendingMessage[]>;
  typing: Record<string, TypingUser[]>;
  members: Record<string, MemberEntry[]>;
  /** Live presence (userId → online) per room, from PresenceEvent frames. */
  presence: Record<string, Record<string, boolean>>;
  loadingOlder: Record<string, boolean>;
  historyError: Record<string, string | undefined>;
}

const TYPING_EVERY_MS = 3000;
const TYPING_AGAIN_MS = 1100;
const SEND_TIMEOUT_MS = 20_000;
const PING_EVERY_MS = 20_000;
const PONG_TIMEOUT_MS = 10_000;
const PAGE = 50;
/** Being added to a room is not pushed: the list is re-read this often while the page is visible… */
const ROOMS_REFRESH_MS = 30_000;
/** …and when the user comes back to the page, at most this often. */
const ROOMS_REFRESH_MIN_MS = 3000;

const newId = (): string =>
  typeof crypto !== 'undefined' && 'randomUUID' in crypto
    ? crypto.randomUUID()
    : Math.random().toString(36).slice(2) + Date.now().toString(36);

/** A direct room's name is "a, b": show the other person. */
export function roomTitle(room: Room, me: string): string {
  if (room.visibility !== RoomVisibility.DIRECT) return room.name;
  const names = room.name.split(',').map((s) => s.trim());
  return names.find((n) => n !== me) ?? room.name;
}

/** When a room last saw activity (its last message, else its creation), in ms. */
export const roomActivity = (e: RoomEntry): number =>
  e.lastMessage?.time ?? (e.room.createTime ? Number(e.room.createTime.seconds) * 1000 : 0);

/** The room list's order: most recent activity first (ties by name, so the order is stable). */
export function roomsByActivity(rooms: Record<string, RoomEntry>): RoomEntry[] {
  return Object.values(rooms).sort((a, b) => roomActivity(b) - roomActivity(a) || a.room.name.localeCompare(b.room.name) || a.room.roomId.localeCompare(b.room.roomId));
}

/**
 * The state without everything known about a room (the user left it, or is no
 * longer a member): its list entry, timeline, own messages in flight, typing,
 * members and presence.
 */
export function withoutRoom(s: ChatState, id: string): ChatState {
  const drop = <T>(r: Record<string, T>): Record<string, T> => {
    if (!(id in r)) return r;
    const next = { ...r };
    delete next[id];
    return next;
  };
  return {
    ...s,
    rooms: drop(s.rooms),
    timelines: drop(s.timelines),
    pending: drop(s.pending),
    typing: drop(s.typing),
    members: drop(s.members),
    presence: drop(s.presence),
    loadingOlder: drop(s.loadingOlder),
    historyError: drop(s.historyError),
  };
}

export class ChatStore {
  private state: ChatState = {
    conn: 'connecting',
    everOnline: false,
    rooms: {},
    roomsLoaded: false,
    timelines: {},
    pending: {},
    typing: {},
    members: {},
    presence: {},
    loadingOlder: {},
    historyError: {},
  };
  private listeners = new Set<() => void>();
  private stream?: DuplexStreamingCall<ConnectRequest, ConnectResponse>;
  private abort?: AbortController;
  private attempt = 0;
  private stopped = false;
  private retryTimer?: ReturnType<typeof setTimeout>;
  private pingTimer?: ReturnType<typeof setInterval>;
  private pongDeadline?: ReturnType<typeof setTimeout>;
  private sendTimers = new Map<string, ReturnType<typeof setTimeout>>();
  private typingSent: Record<string, number> = {};
  /** Rooms where a message was sent since the last typing frame: typing may be told again sooner. */
  private typingAgain = new Set<string>();
  private typingTimer?: ReturnType<typeof setInterval>;
  private subscribed = new Set<string>();
  private viewing: string | null = null;
  private markTimer?: ReturnType<typeof setTimeout>;
  /** The room (and newest seq) seen at the bottom, waiting for the MarkRead timer. */
  private markSeen: { id: string; seq: number } | null = null;
  private loadingLatest = new Set<string>();
  /** Rooms opened in this session. */
  private opened = new Set<string>();
  private statesSupported = true;
  private nonce = 0;
  /** Counts room list changes made here (added, left), to tell them from older ListRooms answers. */
  private gen = 0;
  /** Rooms left (or lost) in this session → gen; their late frames are ignored. */
  private left = new Map<string, number>();
  /** Rooms added here (created, joined) → gen. */
  private added = new Map<string, number>();
  private lastRoomsLoad = 0;
  private membersTimers = new Map<string, ReturnType<typeof setTimeout>>();
  private roomsTimer?: ReturnType<typeof setInterval>;

  constructor(readonly me: User) {}

  // ---------------------------------------------------------------- React glue

  getState = (): ChatState => this.state;

  subscribe = (l: () => void): (() => void) => {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  };

  private set(patch: Partial<ChatState>) {
    this.state = { ...this.state, ...patch };
    for (const l of this.listeners) l();
  }

  private setRoom(id: string, f: (e: RoomEntry) => RoomEntry) {
    const e = this.state.rooms[id];
    if (e) this.set({ rooms: { ...this.state.rooms, [id]: f(e) } });
  }

  private setTimeline(id: string, tl: Timeline) {
    this.set({ timelines: { ...this.state.timelines, [id]: tl } });
  }

  private timeline(id: string): Timeline {
    return this.state.timelines[id] ?? emptyTimeline();
  }

  // ---------------------------------------------------------------- lifecycle

  start() {
    this.stopped = false;
    void this.loadRooms();
    void this.connect();
    this.typingTimer = setInterval(() => this.expireTyping(), 1000);
    this.roomsTimer = setInterval(() => {
      if (document.visibilityState === 'visible') this.refreshRooms();
    }, ROOMS_REFRESH_MS);
    window.addEventListener('online', this.onOnline);
    window.addEventListener('focus', this.onComeBack);
    document.addEventListener('visibilitychange', this.onComeBack);
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearInterval(this.typingTimer);
    clearInterval(this.roomsTimer);
    clearTimeout(this.markTimer);
    clearTimeout(this.staleTimer);
    this.stopPing();
    for (const t of this.sendTimers.values()) clearTimeout(t);
    for (const t of this.membersTimers.values()) clearTimeout(t);
    window.removeEventListener('online', this.onOnline);
    window.removeEventListener('focus', this.onComeBack);
    document.removeEventListener('visibilitychange', this.onComeBack);
    this.abort?.abort();
    this.stream = undefined;
  }

  private onOnline = () => {
    if (this.state.conn !== 'online') {
      clearTimeout(this.retryTimer);
      this.attempt = 0;
      void this.connect();
    }
  };

  private onComeBack = () => {
    if (document.visibilityState === 'visible') this.refreshRooms();
  };

  // ---------------------------------------------------------------- rooms

  /**
   * Re-reads the room list, to pick up rooms the user was added to (or removed
   * from) elsewhere: nothing is pushed for that. Skipped when the list was read
   * moments ago.
   */
  refreshRooms() {
    if (this.stopped || !this.state.roomsLoaded || Date.now() - this.lastRoomsLoad < ROOMS_REFRESH_MIN_MS) return;
    void this.loadRooms(false);
  }

  /**
   * Reads the joined rooms (ListRooms), follows new ones on the stream and
   * forgets the ones no longer listed. `allStates`: also re-read every room's
   * unread count (first load, reconnect); otherwise only the new rooms'.
   */
  async loadRooms(allStates = true) {
    const gen = this.gen;
    this.lastRoomsLoad = Date.now();
    try {
      const rooms: Room[] = [];
      let pageToken = '';
      do {
        const r = await call((o) => roomClient.listRooms({ filter: RoomFilter.JOINED, pageSize: 100, pageToken }, o));
        rooms.push(...r.rooms);
        pageToken = r.nextPageToken;
      } while (pageToken && rooms.length < 1000);
      if (this.stopped) return;
      const next: Record<string, RoomEntry> = {};
      const fresh: string[] = [];
      for (const room of rooms) {
        // Left here after the list was asked for: the list is older news.
        if ((this.left.get(room.roomId) ?? -1) >= gen) continue;
        this.left.delete(room.roomId);
        const had = this.state.rooms[room.roomId];
        if (!had) fresh.push(room.roomId);
        next[room.roomId] = { ...(had ?? { room, unread: 0, lastRead: 0, counted: 0 }), room };
      }
      for (const id of Object.keys(this.state.rooms)) {
        if (next[id]) continue;
        // Added here after the list was asked for: keep it.
        if ((this.added.get(id) ?? -1) >= gen || pageToken) next[id] = this.state.rooms[id];
        // No longer a member (left in another tab, removed): stop following it.
        else this.forget(id);
      }
      this.set({ rooms: next, roomsLoaded: true, roomsError: undefined });
      this.subscribeAll();
      if (allStates) await this.loadStates();
      else if (fresh.length) await this.loadStates(fresh);
    } catch (e) {
      if (e instanceof SessionExpired) return;
      this.set({ roomsError: describeError(e) });
      if (!this.stopped) setTimeout(() => void this.loadRooms(), 3000);
    }
  }

  /** Unread counts and last messages from the server (ListRoomStates), or a local fallback. */
  async loadStates(ids: string[] = []) {
    if (this.statesSupported) {
      try {
        const r = await call((o) => chatClient.listRoomStates({ roomIds: ids }, o));
        for (const st of r.states) this.applyRoomState(st);
        return;
      } catch (e) {
        if (!(e instanceof RpcError) || e.code !== 'UNIMPLEMENTED') return;
        this.statesSupported = false;
      }
    }
    // Older server: last message from history; unread counts only from what arrives live.
    const targets = ids.length ? ids : Object.keys(this.state.rooms);
    await Promise.all(
      targets.slice(0, 50).map(async (id) => {
        try {
          const r = await call((o) => chatClient.listMessages({ roomId: id, pageSize: 1, pageToken: '', afterSeq: '0' }, o));
          const m = r.messages[0];
          if (m) this.noteLast(id, fromProto(m), false);
        } catch {
          /* best effort */
        }
      }),
    );
  }

  private staleStates = new Set<string>();
  private staleTimer?: ReturnType<typeof setTimeout>;

  /** Batches rooms whose counts need the server's view into one ListRoomStates call. */
  private refreshStateSoon(id: string) {
    this.staleStates.add(id);
    clearTimeout(this.staleTimer);
    this.staleTimer = setTimeout(() => {
      const ids = [...this.staleStates].slice(0, 200);
      this.staleStates.clear();
      void this.loadStates(ids);
    }, 300);
  }

  private applyRoomState(st: RoomState) {
    const head = Number(st.head?.seq ?? 0);
    const lastRead = Number(st.lastRead?.seq ?? 0);
    this.setRoom(st.roomId, (e) => {
      // Live messages counted past this snapshot stay counted.
      const extra = e.counted > head ? this.countUnread(st.roomId, Math.max(head, lastRead)) : 0;
      // Read positions only move forward: a snapshot taken before this
      // client's MarkRead was stored must not make read messages unread again.
      const readHere = e.lastRead > lastRead;
      return {
        ...e,
        lastRead: Math.max(lastRead, e.lastRead),
        unread: this.viewing === st.roomId ? 0 : readHere ? this.countUnread(st.roomId, e.lastRead) : Number(st.unreadCount) + extra,
        counted: Math.max(e.counted, head),
        lastMessage: st.lastMessage && (!e.lastMessage || Number(st.lastMessage.seq) >= e.lastMessage.seq) ? fromProto(st.lastMessage) : e.lastMessage,
      };
    });
    if (this.viewing === st.roomId && lastRead < head) this.scheduleMarkRead();
  }

  /** Messages of others after seq that this client holds. */
  private countUnread(id: string, after: number): number {
    return this.timeline(id).messages.filter((m) => m.seq > after && m.senderId !== this.me.userId).length;
  }

  addRoom(room: Room) {
    this.left.delete(room.roomId);
    this.added.set(room.roomId, this.gen++);
    if (!this.state.rooms[room.roomId]) {
      this.set({ rooms: { ...this.state.rooms, [room.roomId]: { room, unread: 0, lastRead: 0, counted: 0 } } });
    }
    this.subscribeRoom(room.roomId);
    void this.loadStates([room.roomId]);
  }

  /**
   * Leaves a room (LeaveRoom), stops following it on the stream and forgets
   * it. Not being a member any more (left in another tab) counts as done.
   */
  async leaveRoom(id: string) {
    try {
      await call((o) => roomClient.leaveRoom({ roomId: id }, o));
    } catch (e) {
      if (!(e instanceof RpcError && (e.code === 'PERMISSION_DENIED' || e.code === 'NOT_FOUND'))) throw e;
    }
    this.forget(id);
  }

  /** Drops a room from the list and everything about it, and unsubscribes it. */
  private forget(id: string) {
    if (this.subscribed.has(id) || this.state.rooms[id]) this.send({ oneofKind: 'unsubscribe', unsubscribe: { roomId: id } });
    this.subscribed.delete(id);
    for (const p of this.state.pending[id] ?? []) {
      clearTimeout(this.sendTimers.get(p.clientMsgId));
      this.sendTimers.delete(p.clientMsgId);
    }
    this.opened.delete(id);
    this.staleStates.delete(id);
    clearTimeout(this.membersTimers.get(id));
    this.membersTimers.delete(id);
    this.typingAgain.delete(id);
    delete this.typingSent[id];
    if (this.viewing === id) this.viewing = null;
    if (this.markSeen?.id === id) this.markSeen = null;
    this.added.delete(id);
    this.left.set(id, this.gen++);
    this.state = withoutRoom(this.state, id);
    for (const l of this.listeners) l();
  }

  /** A frame about a room left in this session (sent before the unsubscribe took effect). */
  private gone(id: string): boolean {
    return this.left.has(id) && !this.state.rooms[id];
  }

  /**
   * Adds a user to a room by username (AddMember); the member list shows them
   * at once and is then re-read. `already`: they were a member before.
   */
  async addMember(roomId: string, username: string): Promise<{ member: MemberEntry; already: boolean }> {
    const r = await call((o) => roomClient.addMember({ roomId, username }, o));
    const user = r.member?.user;
    if (!user) throw new Error('The server sent an incomplete answer.');
    const member = { user, online: r.member!.online };
    const list = this.state.members[roomId] ?? [];
    const already = list.some((m) => m.user.userId === user.userId);
    if (!already) this.set({ members: { ...this.state.members, [roomId]: [...list, member] } });
    void this.loadMembers(roomId);
    return { member, already };
  }

  // ---------------------------------------------------------------- the stream

  private async connect() {
    if (this.stopped) return;
    this.set({ conn: this.state.everOnline ? 'reconnecting' : 'connecting' });
    let token: string;
    try {
      token = await accessToken();
    } catch (e) {
      if (e instanceof SessionExpired) return; // signed out: the app shows the login screen
      this.retry();
      return;
    }
    if (this.stopped) return;
    const ac = new AbortController();
    this.abort = ac;
    const stream = chatClient.connect({ ...bearer(token), abort: ac.signal });
    this.stream = stream;
    this.subscribed.clear();
    stream.responses.onMessage((f) => {
      if (this.stream === stream) this.onFrame(f);
    });
    stream.responses.onError((e) => this.onStreamEnd(stream, token, e));
    stream.responses.onComplete(() => this.onStreamEnd(stream, token, undefined));
    // A busy room's messages may come several to a frame (MessageBatch).
    this.send({ oneofKind: 'options', options: { messageBatches: true } });
    this.ping();
    this.subscribeAll();
    for (const list of Object.values(this.state.pending)) {
      for (const p of list) if (p.state === 'sending') this.sendPending(p);
    }
    this.stopPing();
    this.pingTimer = setInterval(() => this.ping(), PING_EVERY_MS);
  }

  private onStreamEnd(stream: DuplexStreamingCall<ConnectRequest, ConnectResponse>, token: string, e: Error | undefined) {
    if (this.stream !== stream) return;
    this.stream = undefined;
    this.subscribed.clear();
    this.stopPing();
    if (this.stopped) return;
    this.set({ conn: this.state.everOnline ? 'reconnecting' : 'connecting' });
    if (e instanceof RpcError && e.code === 'UNAUTHENTICATED') {
      refreshSession(token).then(
        () => this.retry(0),
        (err) => {
          if (!(err instanceof SessionExpired)) this.retry();
        },
      );
      return;
    }
    this.retry();
  }

  /** Reconnects after an exponential backoff with jitter (250 ms doubling to 8 s). */
  private retry(delay?: number) {
    if (this.stopped) return;
    clearTimeout(this.retryTimer);
    const d = delay ?? Math.min(8000, 250 * 2 ** this.attempt) * (0.75 + Math.random() * 0.5);
    this.attempt++;
    this.retryTimer = setTimeout(() => void this.connect(), d);
  }

  private ping() {
    this.send({ oneofKind: 'ping', ping: { nonce: String(++this.nonce) } });
    clearTimeout(this.pongDeadline);
    this.pongDeadline = setTimeout(() => {
      // No answer: the connection is dead even if the socket has not noticed.
      const s = this.stream;
      if (s) {
        this.abort?.abort();
        this.onStreamEnd(s, '', new RpcError('no pong', 'UNAVAILABLE'));
      }
    }, PONG_TIMEOUT_MS);
  }

  private stopPing() {
    clearInterval(this.pingTimer);
    clearTimeout(this.pongDeadline);
  }

  private send(frame: ConnectRequest['frame']): boolean {
    const s = this.stream;
    if (!s) return false;
    s.requests.send({ frame }).catch(() => {
      /* the stream ended; onStreamEnd reconnects and resends what is pending */
    });
    return true;
  }

  private subscribeRoom(id: string, resumeFrom = resumePosition(this.timeline(id))) {
    if (!this.stream) return;
    this.subscribed.add(id);
    this.send({ oneofKind: 'subscribe', subscribe: { roomId: id, resumeFrom } });
  }

  private subscribeAll() {
    for (const id of Object.keys(this.state.rooms)) {
      if (!this.subscribed.has(id)) this.subscribeRoom(id);
    }
  }

  private online() {
    if (this.state.conn !== 'online') {
      this.attempt = 0;
      const wasReconnect = this.state.everOnline;
      this.set({ conn: 'online', everOnline: true });
      if (wasReconnect) {
        // Rooms, counts and members may have moved while we were away.
        void this.loadRooms();
        if (this.viewing) void this.loadMembers(this.viewing);
      }
    }
  }

  private onFrame(f: ConnectResponse) {
    const fr = f.frame;
    switch (fr.oneofKind) {
      case 'pong':
        clearTimeout(this.pongDeadline);
        this.online();
        return;
      case 'subscribed': {
        this.online();
        const id = fr.subscribed.roomId;
        const head = fr.subscribed.head;
        if (!head || this.gone(id)) return;
        const before = this.timeline(id);
        const r = applyHead(before, head.epoch, Number(head.seq));
        this.setTimeline(id, r.timeline);
        if (r.epochChanged) this.reload(id, before);
        // Messages before the subscription took effect were not counted live:
        // ask the server for the room's count.
        const e = this.state.rooms[id];
        if (r.epochChanged || (e && Number(head.seq) > e.counted)) this.refreshStateSoon(id);
        return;
      }
      case 'message':
        this.online();
        this.onMessage(fromProto(fr.message));
        return;
      case 'messageBatch':
        this.online();
        for (const m of fr.messageBatch.messages) this.onMessage(fromProto(m));
        return;
      case 'sendAck': {
        const ack = fr.sendAck;
        const p = this.findPending(ack.clientMsgId);
        if (ack.message) {
          this.onMessage(fromProto(ack.message));
          if (p) this.dropPending(p);
        } else if (p) {
          const err = ack.error;
          this.updatePending(p, {
            state: 'failed',
            error: err ? describeError(new RpcError(err.message, codeName(err.code))) : 'Not sent',
          });
        }
        return;
      }
      case 'resyncRequired': {
        const id = fr.resyncRequired.roomId;
        if (this.gone(id)) return;
        const head = fr.resyncRequired.head;
        const before = this.timeline(id);
        this.setTimeline(id, resetEpoch(before, head?.epoch ?? '', Number(head?.seq ?? 0)));
        this.reload(id, before);
        void this.loadStates([id]);
        return;
      }
      case 'messageWithdrawn': {
        const w = fr.messageWithdrawn;
        if (this.gone(w.roomId)) return;
        const tl = withdraw(this.timeline(w.roomId), Number(w.seq), w.messageId);
        this.setTimeline(w.roomId, tl);
        this.setRoom(w.roomId, (e) => {
          const wasLast = e.lastMessage?.seq === Number(w.seq);
          const unread = e.unread > 0 && Number(w.seq) > e.lastRead ? e.unread - 1 : e.unread;
          return { ...e, unread, lastMessage: wasLast ? tl.messages[tl.messages.length - 1] : e.lastMessage };
        });
        return;
      }
      case 'subscribeError': {
        const id = fr.subscribeError.roomId;
        this.subscribed.delete(id);
        const code = fr.subscribeError.error?.code;
        // No longer a member (left elsewhere, removed): drop it from the list.
        if (code === 5 || code === 7) this.forget(id);
        return;
      }
      case 'typing': {
        const t = fr.typing;
        if (t.userId === this.me.userId || this.gone(t.roomId)) return;
        const expires = t.expireTime ? Timestamp.toDate(t.expireTime).getTime() : Date.now() + 5000;
        // Clamp to a sane window whatever the clocks say.
        const until = Math.min(Math.max(expires, Date.now() + 1000), Date.now() + 10_000);
        const list = (this.state.typing[t.roomId] ?? []).filter((u) => u.userId !== t.userId);
        this.set({ typing: { ...this.state.typing, [t.roomId]: [...list, { userId: t.userId, username: t.username, expires: until }] } });
        return;
      }
      case 'presence': {
        const p = fr.presence;
        if (this.gone(p.roomId)) return;
        this.set({ presence: { ...this.state.presence, [p.roomId]: { ...(this.state.presence[p.roomId] ?? {}), [p.userId]: p.online } } });
        const members = this.state.members[p.roomId];
        if (members && p.online && !members.some((m) => m.user?.userId === p.userId)) void this.loadMembers(p.roomId);
        // Gone offline in a room opened here: they may have left it.
        else if (members && !p.online && this.opened.has(p.roomId)) this.loadMembersSoon(p.roomId);
        return;
      }
      case 'readMarker': {
        const rm = fr.readMarker;
        const seq = Number(rm.position?.seq ?? 0);
        const e = this.state.rooms[rm.roomId];
        if (!e || seq <= e.lastRead) return;
        // Read on another device or tab.
        this.setRoom(rm.roomId, (x) => ({ ...x, lastRead: seq, unread: seq >= x.counted ? 0 : this.countUnread(rm.roomId, seq) }));
        if (seq < e.counted) void this.loadStates([rm.roomId]);
        return;
      }
      default:
        return;
    }
  }

  private onMessage(m: ChatMessage) {
    if (this.gone(m.roomId)) return;
    const before = this.timeline(m.roomId);
    const r = applyMessage(before, m);
    if (r.epochChanged) {
      this.setTimeline(m.roomId, applyMessage(r.timeline, m).timeline);
      this.reload(m.roomId, before);
    } else if (r.timeline !== before) {
      this.setTimeline(m.roomId, r.timeline);
    }
    // The author stopped typing.
    const typing = this.state.typing[m.roomId];
    if (typing?.some((u) => u.userId === m.senderId)) {
      this.set({ typing: { ...this.state.typing, [m.roomId]: typing.filter((u) => u.userId !== m.senderId) } });
    }
    this.noteLast(m.roomId, m, true);
  }

  private noteLast(id: string, m: ChatMessage, live: boolean) {
    const mine = m.senderId === this.me.userId;
    this.setRoom(id, (e) => {
      const isNew = live && m.seq > e.counted;
      const seen = this.viewing === id || mine;
      return {
        ...e,
        lastMessage: !e.lastMessage || m.seq >= e.lastMessage.seq ? m : e.lastMessage,
        counted: Math.max(e.counted, live ? m.seq : e.counted),
        unread: isNew && !seen && m.seq > e.lastRead ? e.unread + 1 : e.unread,
      };
    });
    if (live && this.viewing === id) this.scheduleMarkRead();
  }

  // ---------------------------------------------------------------- history

  /** Loads the newest page of a room (first open, epoch change), then closes any gap with a resumed subscription. */
  async loadLatest(id: string) {
    if (this.loadingLatest.has(id)) return;
    this.loadingLatest.add(id);
    try {
      const r = await call((o) => chatClient.listMessages({ roomId: id, pageSize: PAGE, pageToken: '', afterSeq: '0' }, o));
      if (this.gone(id)) return;
      const page = r.messages.map(fromProto);
      const tl = mergeHistory(this.timeline(id), page, r.nextPageToken, true);
      this.setTimeline(id, tl);
      this.set({ historyError: { ...this.state.historyError, [id]: undefined } });
      const newest = page.reduce((a, m) => Math.max(a, m.epoch === tl.epoch ? m.seq : 0), 0);
      if (tl.epoch && newest < tl.pos) {
        // Stored history lags the live head (the persister writes
        // asynchronously): replay what lies between from the server's cache.
        this.subscribeRoom(id, { epoch: tl.epoch, seq: String(newest) });
      }
      const last = tl.messages[tl.messages.length - 1];
      if (last) this.noteLast(id, last, false);
      if (this.viewing === id) this.scheduleMarkRead();
    } catch (e) {
      if (!(e instanceof SessionExpired)) this.set({ historyError: { ...this.state.historyError, [id]: describeError(e) } });
    } finally {
      this.loadingLatest.delete(id);
    }
  }

  /** After an epoch change: reload the history of a room that had been loaded (or is on screen). */
  private reload(id: string, before: Timeline) {
    if (before.loaded || this.viewing === id || this.opened.has(id)) void this.loadLatest(id);
  }

  async loadOlder(id: string) {
    const tl = this.timeline(id);
    if (!tl.olderToken || this.state.loadingOlder[id]) return;
    this.set({ loadingOlder: { ...this.state.loadingOlder, [id]: true } });
    try {
      const r = await call((o) => chatClient.listMessages({ roomId: id, pageSize: PAGE, pageToken: tl.olderToken, afterSeq: '0' }, o));
      if (this.gone(id)) return;
      this.setTimeline(id, mergeHistory(this.timeline(id), r.messages.map(fromProto), r.nextPageToken, false));
    } catch (e) {
      this.set({ historyError: { ...this.state.historyError, [id]: describeError(e) } });
    } finally {
      this.set({ loadingOlder: { ...this.state.loadingOlder, [id]: false } });
    }
  }

  /** Re-reads a room's members in a moment (once for a burst of presence changes). */
  private loadMembersSoon(id: string) {
    clearTimeout(this.membersTimers.get(id));
    this.membersTimers.set(
      id,
      setTimeout(() => {
        this.membersTimers.delete(id);
        if (!this.stopped && this.state.rooms[id]) void this.loadMembers(id);
      }, 1000),
    );
  }

  /**
   * Reads the room's members (up to 2,000, in pages of 500). A room's first
   * load shows each page as it comes, so that a large room's panel fills at
   * once; a reload replaces the list only when it is complete, so that it
   * does not shrink meanwhile.
   */
  async loadMembers(id: string) {
    try {
      const first = this.state.members[id] === undefined;
      const all: Member[] = [];
      let pageToken = '';
      do {
        const r = await call((o) => roomClient.listMembers({ roomId: id, pageSize: 500, pageToken }, o));
        all.push(...r.members);
        pageToken = r.nextPageToken;
        if (first && pageToken && all.length < 2000) this.showMembers(id, all);
      } while (pageToken && all.length < 2000);
      this.showMembers(id, all);
    } catch {
      /* the panel shows what it has */
    }
  }

  private showMembers(id: string, all: Member[]) {
    if (this.gone(id)) return;
    const members = all.filter((m) => m.user).map((m) => ({ user: m.user!, online: m.online }));
    // The snapshot supersedes earlier presence events.
    const live = { ...(this.state.presence[id] ?? {}) };
    for (const m of members) delete live[m.user.userId];
    this.set({ members: { ...this.state.members, [id]: members }, presence: { ...this.state.presence, [id]: live } });
  }

  // ---------------------------------------------------------------- the open room

  /** The room on screen; `atBottom` when its newest message is visible. */
  setViewing(id: string | null, atBottom: boolean) {
    const prev = this.viewing;
    this.viewing = id && atBottom && document.visibilityState === 'visible' ? id : null;
    if (this.viewing && this.viewing !== prev) this.scheduleMarkRead();
  }

  /** The view of a room went away (unmounted); a newer view may already have taken over. */
  leaveView(id: string) {
    if (this.viewing === id) this.viewing = null;
  }

  /** Called when a room is opened. */
  open(id: string) {
    this.opened.add(id);
    if (!this.timeline(id).loaded) void this.loadLatest(id);
    void this.loadMembers(id);
  }

  /**
   * Marks the room on screen read in a moment (one MarkRead for a burst).
   * What was on screen now counts even if the view moves on before then
   * (scrolled up, another room): it was seen.
   */
  private scheduleMarkRead() {
    const id = this.viewing;
    if (!id) return;
    if (this.markSeen && this.markSeen.id !== id) this.markRead();
    const seq = newestSeq(this.timeline(id));
    this.markSeen = { id, seq: Math.max(seq, this.markSeen?.seq ?? 0) };
    clearTimeout(this.markTimer);
    this.markTimer = setTimeout(() => this.markRead(), 250);
  }

  private markRead() {
    const seen = this.markSeen;
    this.markSeen = null;
    if (!seen) return;
    const id = seen.id;
    const tl = this.timeline(id);
    const onScreen = this.viewing === id;
    // Still at the bottom: up to the newest message, which is on screen.
    const seq = onScreen ? Math.max(seen.seq, newestSeq(tl)) : seen.seq;
    const e = this.state.rooms[id];
    if (!e || (seq <= e.lastRead && e.unread === 0) || !tl.epoch) return;
    const lastRead = Math.max(e.lastRead, seq);
    this.setRoom(id, (x) => ({ ...x, lastRead: Math.max(x.lastRead, seq), unread: onScreen ? 0 : this.countUnread(id, lastRead) }));
    if (seq <= e.lastRead) return;
    const position = { epoch: tl.epoch, seq: String(seq) };
    // The RPC (rather than the stream's mark_read frame) is answered, so a
    // marker sent just before the page goes away is known to be stored.
    const attempt = (n: number): void => {
      call((o) => chatClient.markRead({ roomId: id, position }, o)).catch((e) => {
        if (e instanceof RpcError && e.code === 'UNIMPLEMENTED') {
          this.send({ oneofKind: 'markRead', markRead: { roomId: id, position } });
        } else if (n < 3 && !(e instanceof SessionExpired) && !(e instanceof RpcError && ['INVALID_ARGUMENT', 'FAILED_PRECONDITION', 'NOT_FOUND'].includes(e.code))) {
          setTimeout(() => attempt(n + 1), 1000 * (n + 1));
        }
      });
    };
    attempt(0);
  }

  // ---------------------------------------------------------------- sending and typing

  sendMessage(roomId: string, body: string) {
    const p: PendingMessage = { clientMsgId: newId(), roomId, body, state: 'sending', time: Date.now() };
    this.set({ pending: { ...this.state.pending, [roomId]: [...(this.state.pending[roomId] ?? []), p] } });
    this.typingAgain.add(roomId);
    this.sendPending(p);
  }

  /** Sends again with the same client_msg_id: the server never makes a second message of it. */
  retry_(p: PendingMessage) {
    const cur = this.findPending(p.clientMsgId);
    if (!cur) return;
    this.updatePending(cur, { state: 'sending', error: undefined });
    this.sendPending({ ...cur, state: 'sending' });
  }

  discard(p: PendingMessage) {
    const cur = this.findPending(p.clientMsgId);
    if (cur) this.dropPending(cur);
  }

  private sendPending(p: PendingMessage) {
    this.send({ oneofKind: 'send', send: { roomId: p.roomId, clientMsgId: p.clientMsgId, body: p.body } });
    clearTimeout(this.sendTimers.get(p.clientMsgId));
    this.sendTimers.set(
      p.clientMsgId,
      setTimeout(() => {
        const cur = this.findPending(p.clientMsgId);
        if (cur?.state === 'sending') this.updatePending(cur, { state: 'failed', error: 'Not sent: no answer from the server.' });
      }, SEND_TIMEOUT_MS),
    );
  }

  private findPending(clientMsgId: string): PendingMessage | undefined {
    for (const list of Object.values(this.state.pending)) {
      const p = list.find((x) => x.clientMsgId === clientMsgId);
      if (p) return p;
    }
    return undefined;
  }

  private updatePending(p: PendingMessage, patch: Partial<PendingMessage>) {
    const list = (this.state.pending[p.roomId] ?? []).map((x) => (x.clientMsgId === p.clientMsgId ? { ...x, ...patch } : x));
    this.set({ pending: { ...this.state.pending, [p.roomId]: list } });
  }

  private dropPending(p: PendingMessage) {
    clearTimeout(this.sendTimers.get(p.clientMsgId));
    this.sendTimers.delete(p.clientMsgId);
    const list = (this.state.pending[p.roomId] ?? []).filter((x) => x.clientMsgId !== p.clientMsgId);
    this.set({ pending: { ...this.state.pending, [p.roomId]: list } });
  }

  /** The user typed in a room's composer: tell the room, at most every 3 s. */
  typing(roomId: string) {
    const now = Date.now();
    const since = now - (this.typingSent[roomId] ?? 0);
    // After a send the next message is being typed: say so as soon as the
    // server takes it again (it keeps at most one typing event a second).
    if (since < TYPING_EVERY_MS && !(this.typingAgain.has(roomId) && since >= TYPING_AGAIN_MS)) return;
    if (this.send({ oneofKind: 'typing', typing: { roomId } })) {
      this.typingSent[roomId] = now;
      this.typingAgain.delete(roomId);
    }
  }

  private expireTyping() {
    const now = Date.now();
    let changed = false;
    const next: Record<string, TypingUser[]> = {};
    for (const [room, list] of Object.entries(this.state.typing)) {
      const keep = list.filter((u) => u.expires > now);
      if (keep.length !== list.length) changed = true;
      if (keep.length) next[room] = keep;
    }
    if (changed) this.set({ typing: next });
  }
}
