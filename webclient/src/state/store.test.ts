// The chat engine without a browser: the pure helpers, and ChatStore driven
// through fake clients (../api is replaced; the test plays the server on a
// fake Connect stream).
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { RpcError } from '@protobuf-ts/runtime-rpc';
import type { ConnectRequest, ConnectResponse, Message } from '@gen/parley/v1/chat';
import { RoomVisibility, type Room } from '@gen/parley/v1/rooms';
import type { User } from '@gen/parley/v1/auth';
import { emptyTimeline, type ChatMessage } from './timeline';
import { ChatStore, roomsByActivity, roomTitle, withoutRoom, type ChatState, type RoomEntry } from './store';

const h = vi.hoisted(() => {
  /** One Connect call: what the client sent, and a way to answer. */
  class FakeStream {
    sent: ConnectRequest['frame'][] = [];
    private onMsg?: (f: ConnectResponse) => void;
    requests = {
      send: async (r: ConnectRequest) => {
        this.sent.push(r.frame);
      },
      complete: async () => {},
    };
    responses = {
      onMessage: (cb: (f: ConnectResponse) => void) => {
        this.onMsg = cb;
        return () => {};
      },
      onError: () => () => {},
      onComplete: () => () => {},
    };
    push(frame: ConnectResponse['frame']) {
      this.onMsg?.({ frame });
    }
    /** Rooms subscribed/unsubscribed, in order. */
    subs() {
      return this.sent.flatMap((f) =>
        f.oneofKind === 'subscribe' ? [`+${f.subscribe.roomId}`] : f.oneofKind === 'unsubscribe' ? [`-${f.unsubscribe.roomId}`] : [],
      );
    }
  }
  return { FakeStream, streams: [] as InstanceType<typeof FakeStream>[] };
});

const rpc = {
  listRooms: vi.fn(),
  leaveRoom: vi.fn(),
  addMember: vi.fn(),
  listMembers: vi.fn(),
  listRoomStates: vi.fn(),
  markRead: vi.fn(),
};

vi.mock('../api', () => {
  class SessionExpired extends Error {}
  const answer = (f: (...a: unknown[]) => unknown) => async (...a: unknown[]) => ({ response: await f(...a) });
  return {
    SessionExpired,
    accessToken: async () => 'token',
    bearer: (t: string) => ({ meta: { authorization: `Bearer ${t}` } }),
    refreshSession: async () => ({}),
    describeError: (e: unknown) => (e instanceof Error ? e.message : String(e)),
    call: async (f: (o: object) => Promise<{ response: unknown }>) => (await f({})).response,
    chatClient: {
      connect: () => {
        const s = new h.FakeStream();
        h.streams.push(s);
        return s;
      },
      listRoomStates: answer((...a) => rpc.listRoomStates(...a)),
      listMessages: answer(() => ({ messages: [], nextPageToken: '' })),
      markRead: answer((...a) => rpc.markRead(...a)),
    },
    roomClient: {
      listRooms: answer((...a) => rpc.listRooms(...a)),
      leaveRoom: answer((...a) => rpc.leaveRoom(...a)),
      addMember: answer((...a) => rpc.addMember(...a)),
      listMembers: answer((...a) => rpc.listMembers(...a)),
    },
  };
});

const me: User = { userId: 'u-ann', username: 'ann', displayName: '' } as User;
const bob: User = { userId: 'u-bob', username: 'bob', displayName: '' } as User;

const room = (id: string, over: Partial<Room> = {}): Room =>
  ({ roomId: id, name: id, topic: '', visibility: RoomVisibility.PUBLIC, creatorId: me.userId, createTime: { seconds: '1000', nanos: 0 }, ...over }) as Room;

const entry = (r: Room, last?: number): RoomEntry => ({
  room: r,
  unread: 0,
  lastRead: 0,
  counted: 0,
  lastMessage: last === undefined ? undefined : ({ seq: 1, time: last } as ChatMessage),
});

const message = (roomId: string, seq: number, from: User, body = `m${seq}`): Message =>
  ({
    messageId: `${roomId}-${seq}`,
    roomId,
    epoch: 'e1',
    seq: String(seq),
    senderId: from.userId,
    senderUsername: from.username,
    clientMsgId: `c-${roomId}-${seq}`,
    body,
    createTime: { seconds: String(2000 + seq), nanos: 0 },
  }) as Message;

/** Lets pending promise chains and zero-delay timers run. */
const settle = async () => {
  for (let i = 0; i < 5; i++) await new Promise((r) => setTimeout(r, 0));
};

describe('pure helpers', () => {
  it('titles a direct room by the other person', () => {
    const dm = room('d', { name: 'ann, bob', visibility: RoomVisibility.DIRECT });
    expect(roomTitle(dm, 'ann')).toBe('bob');
    expect(roomTitle(dm, 'bob')).toBe('ann');
    expect(roomTitle(room('x', { name: 'ann, bob' }), 'ann')).toBe('ann, bob');
  });

  it('orders rooms by last activity, then by name', () => {
    const rooms = {
      a: entry(room('a', { name: 'alpha' })), // created at 1 000 s, no messages
      b: entry(room('b', { name: 'beta' }), 5_000_000),
      c: entry(room('c', { name: 'gamma' }), 3_000_000),
      d: entry(room('d', { name: 'delta' })),
    };
    expect(roomsByActivity(rooms).map((e) => e.room.roomId)).toEqual(['b', 'c', 'a', 'd']);
    expect(roomsByActivity({})).toEqual([]);
  });

  it('forgets everything about one room and nothing else', () => {
    const s: ChatState = {
      conn: 'online',
      everOnline: true,
      rooms: { r1: entry(room('r1')), r2: entry(room('r2')) },
      roomsLoaded: true,
      timelines: { r1: emptyTimeline(), r2: emptyTimeline() },
      pending: { r1: [{ clientMsgId: 'c', roomId: 'r1', body: 'x', state: 'sending', time: 0 }] },
      typing: { r1: [{ userId: 'u', username: 'u', expires: 0 }] },
      members: { r1: [{ user: bob, online: true }], r2: [] },
      presence: { r1: { [bob.userId]: true } },
      loadingOlder: { r1: true },
      historyError: { r2: 'oops' },
    };
    const out = withoutRoom(s, 'r1');
    for (const k of ['rooms', 'timelines', 'pending', 'typing', 'members', 'presence', 'loadingOlder'] as const) {
      expect(Object.keys(out[k])).not.toContain('r1');
    }
    expect(Object.keys(out.rooms)).toEqual(['r2']);
    expect(out.historyError).toBe(s.historyError); // untouched maps keep their identity
    expect(out.timelines.r2).toBe(s.timelines.r2);
    expect(s.rooms.r1).toBeDefined(); // the input is not changed
  });
});

describe('ChatStore', () => {
  let store: ChatStore;
  const stream = () => h.streams[h.streams.length - 1];

  beforeEach(() => {
    h.streams.length = 0;
    for (const f of Object.values(rpc)) f.mockReset();
    rpc.listRooms.mockReturnValue({ rooms: [room('r1'), room('r2', { visibility: RoomVisibility.PRIVATE })], nextPageToken: '' });
    rpc.listRoomStates.mockReturnValue({ states: [] });
    rpc.listMembers.mockReturnValue({ members: [{ user: me, online: true }], nextPageToken: '' });
    rpc.leaveRoom.mockReturnValue({});
    rpc.markRead.mockReturnValue({});
    vi.stubGlobal('window', { addEventListener: vi.fn(), removeEventListener: vi.fn() });
    vi.stubGlobal('document', { addEventListener: vi.fn(), removeEventListener: vi.fn(), visibilityState: 'visible' });
    store = new ChatStore(me);
  });

  afterEach(() => {
    store.stop();
    vi.unstubAllGlobals();
  });

  async function started() {
    store.start();
    await settle();
    stream().push({ oneofKind: 'pong', pong: { nonce: '1' } });
    expect(store.getState().conn).toBe('online');
    expect(stream().subs().sort()).toEqual(['+r1', '+r2']);
  }

  it('counts live messages of others as unread, never its own', async () => {
    await started();
    stream().push({ oneofKind: 'message', message: message('r1', 1, bob) });
    stream().push({ oneofKind: 'message', message: message('r1', 2, me) });
    stream().push({ oneofKind: 'message', message: message('r1', 3, bob) });
    stream().push({ oneofKind: 'message', message: message('r1', 3, bob) }); // replayed
    const e = store.getState().rooms.r1;
    expect(e.unread).toBe(2);
    expect(e.lastMessage?.seq).toBe(3);
    expect(store.getState().timelines.r1.messages.map((m) => m.seq)).toEqual([1, 2, 3]);
  });

  it('asks for message batches and takes a batch as its messages in order', async () => {
    await started();
    expect(stream().sent.some((f) => f.oneofKind === 'options' && f.options.messageBatches)).toBe(true);
    stream().push({ oneofKind: 'message', message: message('r1', 1, bob) });
    stream().push({
      oneofKind: 'messageBatch',
      messageBatch: { messages: [message('r1', 1, bob), message('r1', 2, bob), message('r2', 1, bob), message('r1', 3, me)] },
    });
    expect(store.getState().timelines.r1.messages.map((m) => m.seq)).toEqual([1, 2, 3]);
    expect(store.getState().timelines.r2.messages.map((m) => m.seq)).toEqual([1]);
    expect(store.getState().rooms.r1.unread).toBe(2);
  });

  it('a room state older than a read marker sent here does not make read messages unread again', async () => {
    await started();
    stream().push({ oneofKind: 'subscribed', subscribed: { roomId: 'r1', head: { epoch: 'e1', seq: '0' } } });
    for (const seq of [1, 2, 3]) stream().push({ oneofKind: 'message', message: message('r1', seq, bob) });
    expect(store.getState().rooms.r1.unread).toBe(3);
    store.setViewing('r1', true); // on screen, at the bottom: marked read (MarkRead) after a moment
    await new Promise((r) => setTimeout(r, 300));
    expect(store.getState().rooms.r1).toMatchObject({ unread: 0, lastRead: 3 });
    store.setViewing('r1', false); // scrolled up
    // a ListRoomStates answer computed before the MarkRead was stored
    rpc.listRoomStates.mockReturnValueOnce({
      states: [{ roomId: 'r1', head: { epoch: 'e1', seq: '3' }, lastRead: { epoch: 'e1', seq: '0' }, unreadCount: 3 }],
    });
    await store.loadStates(['r1']);
    expect(store.getState().rooms.r1).toMatchObject({ unread: 0, lastRead: 3 });
    // and a newer one counts what came since
    stream().push({ oneofKind: 'message', message: message('r1', 4, bob) });
    rpc.listRoomStates.mockReturnValueOnce({
      states: [{ roomId: 'r1', head: { epoch: 'e1', seq: '4' }, lastRead: { epoch: 'e1', seq: '3' }, unreadCount: 1 }],
    });
    await store.loadStates(['r1']);
    expect(store.getState().rooms.r1).toMatchObject({ unread: 1, lastRead: 3 });
  });

  it('what was on screen at the bottom is marked read even when the view moves on before the marker goes out', async () => {
    await started();
    stream().push({ oneofKind: 'subscribed', subscribed: { roomId: 'r1', head: { epoch: 'e1', seq: '0' } } });
    for (const seq of [1, 2, 3]) stream().push({ oneofKind: 'message', message: message('r1', seq, bob) });
    store.setViewing('r1', true);
    store.setViewing('r1', false); // scrolled up at once
    stream().push({ oneofKind: 'message', message: message('r1', 4, bob) }); // not seen
    await new Promise((r) => setTimeout(r, 300));
    expect(rpc.markRead).toHaveBeenCalledTimes(1);
    expect(rpc.markRead).toHaveBeenCalledWith({ roomId: 'r1', position: { epoch: 'e1', seq: '3' } }, expect.anything());
    expect(store.getState().rooms.r1).toMatchObject({ lastRead: 3, unread: 1 });
  });

  it('leaving a room unsubscribes it, forgets it and ignores its late frames', async () => {
    await started();
    stream().push({ oneofKind: 'message', message: message('r2', 1, bob) });
    await store.leaveRoom('r2');
    expect(rpc.leaveRoom).toHaveBeenCalledWith({ roomId: 'r2' }, expect.anything());
    expect(stream().subs()).toContain('-r2');
    const s = store.getState();
    expect(Object.keys(s.rooms)).toEqual(['r1']);
    expect(s.timelines.r2).toBeUndefined();
    // sent before the server took the unsubscribe: ignored
    stream().push({ oneofKind: 'message', message: message('r2', 2, bob) });
    stream().push({ oneofKind: 'presence', presence: { roomId: 'r2', userId: bob.userId, online: true } as never });
    expect(store.getState().rooms.r2).toBeUndefined();
    expect(store.getState().timelines.r2).toBeUndefined();
    expect(store.getState().presence.r2).toBeUndefined();
  });

  it('leaving counts as done when the server says we are no longer a member, and fails otherwise', async () => {
    await started();
    rpc.leaveRoom.mockRejectedValueOnce(new RpcError('not a member', 'PERMISSION_DENIED'));
    await store.leaveRoom('r1');
    expect(store.getState().rooms.r1).toBeUndefined();
    rpc.leaveRoom.mockRejectedValueOnce(new RpcError('down', 'UNAVAILABLE'));
    await expect(store.leaveRoom('r2')).rejects.toThrow('down');
    expect(store.getState().rooms.r2).toBeDefined();
    expect(stream().subs()).not.toContain('-r2');
  });

  it('a room list answer older than a leave does not bring the room back', async () => {
    await started();
    let answer!: (v: unknown) => void;
    rpc.listRooms.mockReturnValueOnce(new Promise((r) => (answer = r)));
    const refresh = store.loadRooms(false);
    await store.leaveRoom('r2');
    answer({ rooms: [room('r1'), room('r2')], nextPageToken: '' });
    await refresh;
    expect(Object.keys(store.getState().rooms)).toEqual(['r1']);
    // a later list is the server's word again (e.g. added back by a member)
    rpc.listRooms.mockReturnValueOnce({ rooms: [room('r1'), room('r2')], nextPageToken: '' });
    await store.loadRooms(false);
    expect(Object.keys(store.getState().rooms).sort()).toEqual(['r1', 'r2']);
    expect(stream().subs().filter((x) => x.endsWith('r2'))).toEqual(['+r2', '-r2', '+r2']);
  });

  it('a refreshed room list subscribes new rooms and drops the ones no longer listed', async () => {
    await started();
    rpc.listRooms.mockReturnValueOnce({ rooms: [room('r1'), room('r3', { visibility: RoomVisibility.PRIVATE })], nextPageToken: '' });
    await store.loadRooms(false);
    expect(Object.keys(store.getState().rooms).sort()).toEqual(['r1', 'r3']);
    expect(stream().subs().slice(2).sort()).toEqual(['+r3', '-r2']);
    // only the new room's unread count is asked for
    expect(rpc.listRoomStates).toHaveBeenLastCalledWith({ roomIds: ['r3'] }, expect.anything());
  });

  it('a reconnect does not subscribe a room that was left', async () => {
    await started();
    await store.leaveRoom('r1');
    // the engine opens a new stream, as it does after a failure
    (store as unknown as { connect: () => Promise<void> }).connect();
    await settle();
    expect(h.streams).toHaveLength(2);
    expect(stream().subs()).toEqual(['+r2']);
  });

  it("a large room's members show page by page on first load, and a reload replaces them whole", async () => {
    await started();
    let second!: (v: unknown) => void;
    rpc.listMembers.mockImplementation((req: { pageToken: string }) =>
      req.pageToken === ''
        ? { members: [{ user: me, online: true }], nextPageToken: 'p2' }
        : new Promise((resolve) => (second = resolve)),
    );
    const loading = store.loadMembers('r2');
    await settle();
    expect(store.getState().members.r2.map((m) => m.user.username)).toEqual(['ann']);
    second({ members: [{ user: bob, online: false }], nextPageToken: '' });
    await loading;
    expect(store.getState().members.r2.map((m) => m.user.username)).toEqual(['ann', 'bob']);
    // A reload: the panel keeps the whole list until the new one is complete.
    const reloading = store.loadMembers('r2');
    await settle();
    expect(store.getState().members.r2.map((m) => m.user.username)).toEqual(['ann', 'bob']);
    second({ members: [{ user: bob, online: true }], nextPageToken: '' });
    await reloading;
    expect(store.getState().members.r2.map((m) => [m.user.username, m.online])).toEqual([
      ['ann', true],
      ['bob', true],
    ]);
  });

  it('adding a member shows them at once, then re-reads the list', async () => {
    await started();
    await store.loadMembers('r2');
    rpc.addMember.mockReturnValue({ member: { user: bob, online: false } });
    rpc.listMembers.mockReturnValue({ members: [{ user: me, online: true }, { user: bob, online: false }], nextPageToken: '' });
    const r = await store.addMember('r2', 'bob');
    expect(r.already).toBe(false);
    expect(rpc.addMember).toHaveBeenCalledWith({ roomId: 'r2', username: 'bob' }, expect.anything());
    expect(store.getState().members.r2.map((m) => m.user.username)).toEqual(['ann', 'bob']);
    await settle();
    expect(rpc.listMembers).toHaveBeenCalledTimes(2);
    expect((await store.addMember('r2', 'bob')).already).toBe(true);
    rpc.addMember.mockRejectedValueOnce(new RpcError('user "zed": user not found', 'NOT_FOUND'));
    await expect(store.addMember('r2', 'zed')).rejects.toBeInstanceOf(RpcError);
  });
});
