import { Fragment, useCallback, useEffect, useLayoutEffect, useMemo, useRef, useState, type KeyboardEvent } from 'react';
import type { User } from '@gen/parley/v1/auth';
import { RoomVisibility } from '@gen/parley/v1/rooms';
import { roomTitle, type ChatState, type ChatStore, type MemberEntry, type PendingMessage, type RoomEntry } from '../state/store';
import { emptyTimeline, groupByAuthor, type ChatMessage } from '../state/timeline';
import { Avatar } from './Avatar';
import { AddMemberDialog, LeaveRoomDialog } from './Dialogs';
import { formatDay, formatTime, sameDay } from './util';

interface Props {
  store: ChatStore;
  state: ChatState;
  entry: RoomEntry;
  me: User;
  onBack: () => void;
  /** The room was left: show another one. */
  onLeft: () => void;
}

const NEAR_BOTTOM_PX = 48;
const NEAR_TOP_PX = 240;

export function RoomView({ store, state, entry, me, onBack, onLeft }: Props) {
  const id = entry.room.roomId;
  const tl = state.timelines[id] ?? emptyTimeline();
  const pending = state.pending[id] ?? [];
  const typing = state.typing[id] ?? [];
  const title = roomTitle(entry.room, me.username);
  const [showMembers, setShowMembers] = useState(false);
  const [dialog, setDialog] = useState<'add' | 'leave' | null>(null);
  const [notice, setNotice] = useState('');
  const direct = entry.room.visibility === RoomVisibility.DIRECT;
  const listRef = useRef<HTMLDivElement>(null);
  const atBottom = useRef(true);
  const [scrolledUp, setScrolledUp] = useState(false);
  const [unseen, setUnseen] = useState(0);
  /** The first message when older ones were asked for, and where it was on screen (px below the list's top). */
  const prevFirst = useRef<{ seq: number; offset: number; height: number } | null>(null);
  const lastCount = useRef(0);
  const didInitialScroll = useRef(false);

  useEffect(() => {
    store.open(id);
  }, [store, id]);

  const members = useMemo(() => mergePresence(state.members[id], state.presence[id], me, state.conn === 'online'), [state.members, state.presence, id, me, state.conn]);
  const onlineCount = members.filter((m) => m.online).length;

  // Pending own messages whose live copy has not arrived yet go at the bottom;
  // the others are shown in place with their pending state.
  const pendingById = useMemo(() => new Map(pending.map((p) => [p.clientMsgId, p])), [pending]);
  const inTimeline = useMemo(() => new Set(tl.messages.filter((m) => m.senderId === me.userId).map((m) => m.clientMsgId)), [tl.messages, me.userId]);
  const trailing = pending.filter((p) => !inTimeline.has(p.clientMsgId));
  // Where the "new messages" marker goes: the read position when the room was opened.
  const [markerSeq] = useState(() => (entry.unread > 0 ? entry.lastRead : Number.MAX_SAFE_INTEGER));
  const firstUnread = tl.messages.find((m) => m.seq > markerSeq && m.senderId !== me.userId)?.seq;

  const report = useCallback(() => {
    const el = listRef.current;
    if (!el) return;
    const bottom = el.scrollHeight - el.scrollTop - el.clientHeight < NEAR_BOTTOM_PX;
    atBottom.current = bottom;
    setScrolledUp(!bottom);
    if (bottom) setUnseen(0);
    store.setViewing(id, bottom);
    if (el.scrollTop < NEAR_TOP_PX && tl.olderToken && !state.loadingOlder[id]) {
      const seq = tl.messages[0]?.seq ?? 0;
      const row = el.querySelector(`.bubble-row[data-seq="${seq}"]`);
      const offset = row ? row.getBoundingClientRect().top - el.getBoundingClientRect().top : 0;
      prevFirst.current = { seq, offset, height: el.scrollHeight };
      void store.loadOlder(id);
    }
  }, [store, id, tl.olderToken, tl.messages, state.loadingOlder]);

  const reportRef = useRef(report);
  reportRef.current = report;
  useEffect(() => {
    const vis = () => reportRef.current();
    document.addEventListener('visibilitychange', vis);
    window.addEventListener('focus', vis);
    return () => {
      document.removeEventListener('visibilitychange', vis);
      window.removeEventListener('focus', vis);
      store.leaveView(id);
    };
  }, [store, id]);

  // Keep the view anchored: at the bottom when it was there, in place when older pages arrive above.
  useLayoutEffect(() => {
    const el = listRef.current;
    if (!el) return;
    const count = tl.messages.length + trailing.length;
    const grew = count > lastCount.current;
    const first = tl.messages[0]?.seq ?? 0;
    if (prevFirst.current && first !== prevFirst.current.seq && first < prevFirst.current.seq) {
      // Keep the message that was first where it was (whatever appeared or
      // went away above it: the page, the loading line, the room's start).
      const p = prevFirst.current;
      const row = el.querySelector(`.bubble-row[data-seq="${p.seq}"]`);
      if (row) el.scrollTop += row.getBoundingClientRect().top - el.getBoundingClientRect().top - p.offset;
      else el.scrollTop += el.scrollHeight - p.height;
      prevFirst.current = null;
    } else if (!didInitialScroll.current && tl.loaded) {
      didInitialScroll.current = true;
      // Show the "new messages" marker near the top when the unread part is
      // taller than the view; otherwise simply the newest messages.
      const marker = el.querySelector('.unread-marker');
      const bottom = el.scrollHeight - el.clientHeight;
      if (marker) {
        const top = marker.getBoundingClientRect().top - el.getBoundingClientRect().top + el.scrollTop;
        el.scrollTop = Math.min(top - 56, bottom);
      } else el.scrollTop = el.scrollHeight;
    } else if (atBottom.current) {
      el.scrollTop = el.scrollHeight;
    } else if (grew && lastCount.current > 0) {
      setUnseen((n) => n + (count - lastCount.current));
    }
    lastCount.current = count;
    report();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [tl.messages, trailing.length, tl.loaded]);

  useLayoutEffect(() => {
    if (atBottom.current && listRef.current) listRef.current.scrollTop = listRef.current.scrollHeight;
  }, [typing.length]);

  // Stay at the bottom when the view itself changes size (rotation, window
  // resize, on-screen keyboard).
  useEffect(() => {
    const el = listRef.current;
    if (!el || typeof ResizeObserver === 'undefined') return;
    const ro = new ResizeObserver(() => {
      if (atBottom.current) el.scrollTop = el.scrollHeight;
    });
    ro.observe(el);
    return () => ro.disconnect();
  }, []);

  useEffect(() => {
    if (!notice) return;
    const t = setTimeout(() => setNotice(''), 6000);
    return () => clearTimeout(t);
  }, [notice]);

  const jumpToBottom = () => {
    const el = listRef.current;
    if (el) el.scrollTo({ top: el.scrollHeight, behavior: 'smooth' });
  };

  const groups = groupByAuthor(tl.messages);
  const typingText =
    typing.length === 0
      ? ''
      : typing.length === 1
        ? `${typing[0].username} is typing…`
        : typing.length === 2
          ? `${typing[0].username} and ${typing[1].username} are typing…`
          : 'Several people are typing…';

  return (
    <div className={`room${showMembers ? ' with-members' : ''}`}>
      <section className="room-main" aria-label={`Room ${title}`}>
        <header className="room-head">
          <button className="ghost icon back" onClick={onBack} aria-label="Back to rooms">
            <svg viewBox="0 0 24 24" width="22" height="22" aria-hidden="true">
              <path d="M15 5l-7 7 7 7" fill="none" stroke="currentColor" strokeWidth="2.2" strokeLinecap="round" strokeLinejoin="round" />
            </svg>
          </button>
          <Avatar id={id} name={title} size={38} square={entry.room.visibility !== RoomVisibility.DIRECT} />
          <div className="room-head-text">
            <h1>{title}</h1>
            <p className="muted small">
              {entry.room.visibility === RoomVisibility.DIRECT ? 'Direct message' : entry.room.visibility === RoomVisibility.PRIVATE ? 'Private room' : 'Public room'}
              {' · '}
              <span data-testid="online-count">{onlineCount} online</span>
              {entry.room.topic && entry.room.visibility !== RoomVisibility.DIRECT ? ` · ${entry.room.topic}` : ''}
            </p>
          </div>
          <button
            className={`ghost members-toggle${showMembers ? ' on' : ''}`}
            onClick={() => setShowMembers((v) => !v)}
            aria-expanded={showMembers}
            aria-controls="members-panel"
            aria-label="Members"
          >
            <svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true">
              <path d="M16 11a3 3 0 1 0 0-6 3 3 0 0 0 0 6zM8 11a3 3 0 1 0 0-6 3 3 0 0 0 0 6zm0 2c-2.7 0-6 1.3-6 3.5V19h12v-2.5C14 14.3 10.7 13 8 13zm8 0c-.3 0-.7 0-1 .1 1.2.8 2 2 2 3.4V19h5v-2.5c0-2.2-3.3-3.5-6-3.5z" fill="currentColor" />
            </svg>
            <span>Members</span>
          </button>
        </header>

        <div className="messages" ref={listRef} onScroll={report} role="log" aria-label="Messages" aria-live="polite" aria-relevant="additions" tabIndex={0}>
          {tl.loaded && !tl.olderToken && (
            <div className="room-start">
              <Avatar id={id} name={title} size={56} square={entry.room.visibility !== RoomVisibility.DIRECT} />
              <h2>{title}</h2>
              <p className="muted">This is the beginning of {entry.room.visibility === RoomVisibility.DIRECT ? 'your conversation' : 'the room'}.</p>
            </div>
          )}
          {state.loadingOlder[id] && (
            <div className="loading-older muted small" role="status">
              <span className="spinner" aria-hidden="true" /> Loading earlier messages…
            </div>
          )}
          {!tl.loaded && !state.historyError[id] && (
            <div className="loading-older muted small" role="status">
              <span className="spinner" aria-hidden="true" /> Loading messages…
            </div>
          )}
          {state.historyError[id] && (
            <div className="form-error center" role="alert">
              {state.historyError[id]}{' '}
              <button className="link" onClick={() => void store.loadLatest(id)}>
                Try again
              </button>
            </div>
          )}
          {groups.map((g, gi) => {
            const prev = gi > 0 ? groups[gi - 1] : null;
            const newDay = !prev || !sameDay(prev[prev.length - 1].time, g[0].time);
            const markerHere = firstUnread !== undefined && g.some((m) => m.seq === firstUnread);
            return (
              <Fragment key={g[0].seq}>
                {newDay && (
                  <div className="day-divider" role="separator">
                    <span>{formatDay(g[0].time)}</span>
                  </div>
                )}
                {markerHere && g[0].seq !== firstUnread ? (
                  <>
                    <Group msgs={g.filter((m) => m.seq < firstUnread!)} me={me} pending={pendingById} onRetry={(p) => store.retry_(p)} />
                    <Marker />
                    <Group msgs={g.filter((m) => m.seq >= firstUnread!)} me={me} pending={pendingById} onRetry={(p) => store.retry_(p)} />
                  </>
                ) : (
                  <>
                    {markerHere && <Marker />}
                    <Group msgs={g} me={me} pending={pendingById} onRetry={(p) => store.retry_(p)} />
                  </>
                )}
              </Fragment>
            );
          })}
          {trailing.length > 0 && (
            <div className="group mine">
              <div className="group-body">
                {trailing.map((p) => (
                  <PendingBubble key={p.clientMsgId} p={p} onRetry={() => store.retry_(p)} onDiscard={() => store.discard(p)} />
                ))}
              </div>
            </div>
          )}
        </div>

        <div className="typing" role="status" aria-live="polite">
          {typingText && (
            <>
              <span className="typing-dots" aria-hidden="true">
                <i />
                <i />
                <i />
              </span>
              {typingText}
            </>
          )}
        </div>

        {scrolledUp && (
          <button className="jump" onClick={jumpToBottom}>
            {unseen > 0 ? `${unseen} new message${unseen === 1 ? '' : 's'}` : 'Latest'} <span aria-hidden="true">↓</span>
          </button>
        )}

        <Composer key={id} roomTitle={title} onSend={(body) => { atBottom.current = true; store.sendMessage(id, body); }} onTyping={() => store.typing(id)} />
      </section>

      {showMembers && (
        <aside className="members" id="members-panel" aria-label="Members">
          <header className="members-head">
            <h2>Members</h2>
            <span className="muted small">
              {onlineCount} of {members.length} online
            </span>
            <button className="ghost icon close" onClick={() => setShowMembers(false)} aria-label="Close members">
              ✕
            </button>
          </header>
          {!direct && (
            <div className="members-actions">
              <button className="wide add-member" onClick={() => setDialog('add')}>
                <svg viewBox="0 0 24 24" width="16" height="16" aria-hidden="true">
                  <path d="M12 5v14M5 12h14" stroke="currentColor" strokeWidth="2.4" strokeLinecap="round" />
                </svg>
                Add member
              </button>
            </div>
          )}
          {notice && (
            <p className="members-notice small" role="status">
              {notice}
            </p>
          )}
          <ul className="member-list" aria-label="Online status">
            {members.map((m) => (
              <li key={m.user.userId} className={m.online ? 'online' : 'offline'} data-online={m.online ? 'true' : 'false'}>
                <Avatar id={m.user.userId} name={m.user.displayName || m.user.username} size={32} online={m.online} />
                <span className="member-name">
                  {m.user.displayName || m.user.username}
                  {m.user.userId === me.userId && <span className="muted"> (you)</span>}
                  <span className="muted small block">
                    @{m.user.username} · {m.online ? 'online' : 'offline'}
                  </span>
                </span>
              </li>
            ))}
          </ul>
          <div className="members-foot">
            <button className="wide leave" onClick={() => setDialog('leave')}>
              <svg viewBox="0 0 24 24" width="16" height="16" aria-hidden="true">
                <path d="M15 4h3a2 2 0 0 1 2 2v12a2 2 0 0 1-2 2h-3M10 17l-5-5 5-5M5 12h11" fill="none" stroke="currentColor" strokeWidth="2" strokeLinecap="round" strokeLinejoin="round" />
              </svg>
              {direct ? 'Leave conversation' : 'Leave room'}
            </button>
          </div>
        </aside>
      )}
      {dialog === 'add' && (
        <AddMemberDialog
          roomName={title}
          onClose={() => setDialog(null)}
          add={(username) => store.addMember(id, username)}
          onDone={(username, already) => {
            setDialog(null);
            setNotice(already ? `${username} is already a member.` : `Added ${username}.`);
          }}
        />
      )}
      {dialog === 'leave' && (
        <LeaveRoomDialog
          room={entry.room}
          title={title}
          onClose={() => setDialog(null)}
          leave={async () => {
            await store.leaveRoom(id);
            onLeft();
          }}
        />
      )}
    </div>
  );
}

function Marker() {
  return (
    <div className="unread-marker" role="separator" aria-label="New messages">
      <span>New messages</span>
    </div>
  );
}

function Group({ msgs, me, pending, onRetry }: { msgs: ChatMessage[]; me: User; pending: Map<string, PendingMessage>; onRetry: (p: PendingMessage) => void }) {
  if (msgs.length === 0) return null;
  const mine = msgs[0].senderId === me.userId;
  const first = msgs[0];
  return (
    <div className={`group${mine ? ' mine' : ''}`}>
      {!mine && <Avatar id={first.senderId} name={first.senderUsername} size={34} />}
      <div className="group-body">
        <div className="group-head">
          <span className="author">{mine ? 'You' : first.senderUsername}</span>
          <time dateTime={new Date(first.time).toISOString()}>{formatTime(first.time)}</time>
        </div>
        {msgs.map((m) => {
          const p = mine ? pending.get(m.clientMsgId) : undefined;
          return (
            <div key={m.seq} className="bubble-row" data-seq={m.seq}>
              <div className="bubble" title={new Date(m.time).toLocaleString()}>
                {m.body}
              </div>
              {mine && (
                <span className={`status ${p ? p.state : 'sent'}`} aria-label={p ? (p.state === 'failed' ? 'Failed' : 'Sending') : 'Sent'}>
                  {p?.state === 'failed' ? (
                    <button className="link danger" onClick={() => onRetry(p)}>
                      Failed · Retry
                    </button>
                  ) : p ? (
                    'Sending…'
                  ) : (
                    '✓'
                  )}
                </span>
              )}
            </div>
          );
        })}
      </div>
    </div>
  );
}

function PendingBubble({ p, onRetry, onDiscard }: { p: PendingMessage; onRetry: () => void; onDiscard: () => void }) {
  return (
    <div className={`bubble-row pending ${p.state}`} data-client-msg-id={p.clientMsgId}>
      <div className="bubble">{p.body}</div>
      <span className={`status ${p.state}`} aria-label={p.state === 'failed' ? 'Failed' : 'Sending'}>
        {p.state === 'failed' ? (
          <>
            <span className="danger">{p.error ?? 'Not sent'}</span>{' '}
            <button className="link" onClick={onRetry}>
              Retry
            </button>{' '}
            <button className="link muted" onClick={onDiscard}>
              Discard
            </button>
          </>
        ) : (
          'Sending…'
        )}
      </span>
    </div>
  );
}

function Composer({ roomTitle, onSend, onTyping }: { roomTitle: string; onSend: (body: string) => void; onTyping: () => void }) {
  const [text, setText] = useState('');
  const ref = useRef<HTMLTextAreaElement>(null);
  const tooLong = new TextEncoder().encode(text).length > 4096;

  useEffect(() => {
    if (window.matchMedia('(min-width: 760px)').matches) ref.current?.focus();
  }, []);

  useLayoutEffect(() => {
    const el = ref.current;
    if (!el) return;
    el.style.height = 'auto';
    el.style.height = `${Math.min(el.scrollHeight, 180)}px`;
  }, [text]);

  const send = () => {
    const body = text.trim();
    if (!body || tooLong) return;
    onSend(body);
    setText('');
    ref.current?.focus();
  };

  const onKey = (e: KeyboardEvent<HTMLTextAreaElement>) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.nativeEvent.isComposing) {
      e.preventDefault();
      send();
    }
  };

  return (
    <form
      className="composer"
      onSubmit={(e) => {
        e.preventDefault();
        send();
      }}
    >
      <label htmlFor="composer-input" className="sr-only">
        Message
      </label>
      <textarea
        id="composer-input"
        ref={ref}
        rows={1}
        value={text}
        placeholder={`Message ${roomTitle}`}
        onChange={(e) => {
          setText(e.target.value);
          if (e.target.value) onTyping();
        }}
        onKeyDown={onKey}
        aria-describedby="composer-hint"
        aria-invalid={tooLong || undefined}
      />
      <button className="primary send" type="submit" disabled={!text.trim() || tooLong} aria-label="Send">
        <svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true">
          <path d="M3.4 20.4l17.45-7.48a1 1 0 0 0 0-1.84L3.4 3.6a.99.99 0 0 0-1.39.91L2 9.12c0 .5.37.93.87.99L17 12 2.87 13.88c-.5.07-.87.5-.87 1l.01 4.61c0 .71.73 1.2 1.39.91z" fill="currentColor" />
        </svg>
      </button>
      <p id="composer-hint" className="sr-only">
        Enter sends, Shift+Enter starts a new line.
      </p>
      {tooLong && <p className="field-error composer-error">This message is too long (at most 4096 bytes).</p>}
    </form>
  );
}

function mergePresence(members: MemberEntry[] | undefined, live: Record<string, boolean> | undefined, me: User, connected: boolean): MemberEntry[] {
  const list = (members ?? []).map((m) => ({
    user: m.user,
    online: m.user.userId === me.userId ? connected : live?.[m.user.userId] ?? m.online,
  }));
  return list.sort((a, b) => Number(b.online) - Number(a.online) || a.user.username.localeCompare(b.user.username));
}
