import { useEffect, useId, useRef, useState, type FormEvent, type ReactNode } from 'react';
import { RpcError } from '@protobuf-ts/runtime-rpc';
import type { User } from '@gen/parley/v1/auth';
import { RoomFilter, RoomVisibility, type Room } from '@gen/parley/v1/rooms';
import { call, describeError, fieldError, roomClient } from '../api';
import type { RoomEntry } from '../state/store';
import { Avatar } from './Avatar';

function Modal({ title, onClose, children, describedBy }: { title: string; onClose: () => void; children: ReactNode; describedBy?: string }) {
  const id = useId();
  const ref = useRef<HTMLDivElement>(null);
  // The latest onClose, without re-running the focus effect when a parent
  // re-renders with a new function (which would pull the focus back).
  const close = useRef(onClose);
  close.current = onClose;
  useEffect(() => {
    const prev = document.activeElement as HTMLElement | null;
    const first = ref.current?.querySelector<HTMLElement>('input, button:not(.close), select, textarea');
    first?.focus();
    const onKey = (e: KeyboardEvent) => {
      if (e.key === 'Escape') close.current();
    };
    window.addEventListener('keydown', onKey);
    return () => {
      window.removeEventListener('keydown', onKey);
      if (prev?.isConnected) prev.focus?.();
    };
  }, []);
  return (
    <div className="overlay" onMouseDown={(e) => e.target === e.currentTarget && onClose()}>
      <div className="modal" role="dialog" aria-modal="true" aria-labelledby={id} aria-describedby={describedBy} ref={ref}>
        <header className="modal-head">
          <h2 id={id}>{title}</h2>
          <button className="ghost icon close" onClick={onClose} aria-label="Close">
            ✕
          </button>
        </header>
        {children}
      </div>
    </div>
  );
}

export function NewRoomDialog({ onClose, onDone }: { onClose: () => void; onDone: (r: Room) => void }) {
  const [name, setName] = useState('');
  const [topic, setTopic] = useState('');
  const [priv, setPriv] = useState(false);
  const [errors, setErrors] = useState<{ name?: string; topic?: string; form?: string }>({});
  const [busy, setBusy] = useState(false);

  async function submit(e: FormEvent) {
    e.preventDefault();
    const n = name.trim();
    const errs: typeof errors = {};
    if (!n) errs.name = 'Give the room a name.';
    else if ([...n].length > 100) errs.name = 'At most 100 characters.';
    if ([...topic].length > 500) errs.topic = 'At most 500 characters.';
    setErrors(errs);
    if (Object.keys(errs).length) return;
    setBusy(true);
    try {
      const r = await call((o) =>
        roomClient.createRoom({ name: n, topic: topic.trim(), visibility: priv ? RoomVisibility.PRIVATE : RoomVisibility.PUBLIC }, o),
      );
      if (r.room) onDone(r.room);
    } catch (err) {
      const f = fieldError(err);
      if (f?.field === 'name' || f?.field === 'topic') setErrors({ [f.field]: f.reason });
      else setErrors({ form: describeError(err) });
    } finally {
      setBusy(false);
    }
  }

  return (
    <Modal title="New room" onClose={onClose}>
      <form onSubmit={submit} noValidate>
        <div className={`field${errors.name ? ' invalid' : ''}`}>
          <label htmlFor="room-name">Room name</label>
          <input id="room-name" value={name} onChange={(e) => setName(e.target.value)} aria-invalid={!!errors.name || undefined} aria-describedby="room-name-error" maxLength={120} />
          {errors.name && <p className="field-error" id="room-name-error" role="alert">{errors.name}</p>}
        </div>
        <div className={`field${errors.topic ? ' invalid' : ''}`}>
          <label htmlFor="room-topic">Topic (optional)</label>
          <input id="room-topic" value={topic} onChange={(e) => setTopic(e.target.value)} aria-invalid={!!errors.topic || undefined} />
          {errors.topic && <p className="field-error" role="alert">{errors.topic}</p>}
        </div>
        <fieldset className="choice">
          <legend>Who can join</legend>
          <label className={!priv ? 'selected' : ''}>
            <input type="radio" name="vis" checked={!priv} onChange={() => setPriv(false)} />
            <span>
              <strong>Public</strong>
              <span className="muted small">Anyone can find and join it.</span>
            </span>
          </label>
          <label className={priv ? 'selected' : ''}>
            <input type="radio" name="vis" checked={priv} onChange={() => setPriv(true)} />
            <span>
              <strong>Private</strong>
              <span className="muted small">Only people added by members.</span>
            </span>
          </label>
        </fieldset>
        {errors.form && <p className="form-error" role="alert">{errors.form}</p>}
        <FormActions onCancel={onClose} busy={busy} label="Create room" busyLabel="Creating…" />
      </form>
    </Modal>
  );
}

export function BrowseDialog({ joined, onClose, onDone }: { joined: Record<string, RoomEntry>; onClose: () => void; onDone: (r: Room) => void }) {
  const [rooms, setRooms] = useState<Room[] | null>(null);
  const [token, setToken] = useState('');
  const [error, setError] = useState('');
  const [busy, setBusy] = useState<string | null>(null);
  const [q, setQ] = useState('');

  const load = async (pageToken: string) => {
    try {
      const r = await call((o) => roomClient.listRooms({ filter: RoomFilter.PUBLIC, pageSize: 50, pageToken }, o));
      setRooms((prev) => [...(pageToken ? prev ?? [] : []), ...r.rooms]);
      setToken(r.nextPageToken);
    } catch (e) {
      setError(describeError(e));
    }
  };
  useEffect(() => {
    void load('');
  }, []);

  const join = async (room: Room) => {
    if (joined[room.roomId]) return onDone(room);
    setBusy(room.roomId);
    try {
      const r = await call((o) => roomClient.joinRoom({ roomId: room.roomId }, o));
      onDone(r.room ?? room);
    } catch (e) {
      setError(describeError(e));
    } finally {
      setBusy(null);
    }
  };

  const shown = (rooms ?? []).filter((r) => !q.trim() || r.name.toLowerCase().includes(q.trim().toLowerCase()) || r.topic.toLowerCase().includes(q.trim().toLowerCase()));

  return (
    <Modal title="Public rooms" onClose={onClose}>
      <label htmlFor="browse-filter" className="sr-only">
        Search public rooms
      </label>
      <input id="browse-filter" type="search" placeholder="Search public rooms" value={q} onChange={(e) => setQ(e.target.value)} />
      {error && <p className="form-error" role="alert">{error}</p>}
      {rooms === null && !error && <p className="muted">Loading…</p>}
      {rooms && shown.length === 0 && <p className="muted">No public rooms{q ? ' match' : ' yet'}.</p>}
      <ul className="browse-list">
        {shown.map((r) => (
          <li key={r.roomId}>
            <Avatar id={r.roomId} name={r.name} size={38} square />
            <span className="browse-text">
              <strong>{r.name}</strong>
              {r.topic && <span className="muted small">{r.topic}</span>}
            </span>
            <button
              className={joined[r.roomId] ? '' : 'primary'}
              onClick={() => void join(r)}
              disabled={busy === r.roomId}
              aria-label={`${joined[r.roomId] ? 'Open' : 'Join'} ${r.name}`}
            >
              {joined[r.roomId] ? 'Open' : busy === r.roomId ? 'Joining…' : 'Join'}
            </button>
          </li>
        ))}
      </ul>
      {token && (
        <button className="wide" onClick={() => void load(token)}>
          Show more
        </button>
      )}
    </Modal>
  );
}

/** A labelled username input with its error, as the direct-message and add-member dialogs use it. */
function UsernameField({
  id,
  errorId,
  value,
  error,
  placeholder,
  onChange,
}: {
  id: string;
  errorId: string;
  value: string;
  error: string;
  placeholder: string;
  onChange: (v: string) => void;
}) {
  return (
    <div className={`field${error ? ' invalid' : ''}`}>
      <label htmlFor={id}>Username</label>
      <input
        id={id}
        value={value}
        onChange={(e) => onChange(e.target.value)}
        autoCapitalize="none"
        autoComplete="off"
        spellCheck={false}
        placeholder={placeholder}
        aria-invalid={!!error || undefined}
        aria-describedby={error ? errorId : undefined}
      />
      {error && (
        <p className="field-error" id={errorId} role="alert">
          {error}
        </p>
      )}
    </div>
  );
}

/** Cancel and submit buttons of a dialog form. */
function FormActions({ onCancel, busy, label, busyLabel }: { onCancel: () => void; busy: boolean; label: string; busyLabel: string }) {
  return (
    <div className="modal-actions">
      <button type="button" onClick={onCancel}>
        Cancel
      </button>
      <button className="primary" type="submit" disabled={busy}>
        {busy ? busyLabel : label}
      </button>
    </div>
  );
}

export function DirectDialog({ me, onClose, onDone }: { me: User; onClose: () => void; onDone: (r: Room) => void }) {
  const [username, setUsername] = useState('');
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);

  async function submit(e: FormEvent) {
    e.preventDefault();
    const u = username.trim().toLowerCase().replace(/^@/, '');
    if (!u) return setError('Enter a username.');
    if (u === me.username) return setError("That's you! Enter someone else's username.");
    setBusy(true);
    setError('');
    try {
      const r = await call((o) => roomClient.createDirectRoom({ username: u }, o));
      if (r.room) onDone(r.room);
    } catch (err) {
      if (err instanceof RpcError && err.code === 'NOT_FOUND') setError(`There is no user called “${u}”.`);
      else setError(fieldError(err)?.reason ?? describeError(err));
    } finally {
      setBusy(false);
    }
  }

  return (
    <Modal title="Direct message" onClose={onClose}>
      <form onSubmit={submit} noValidate>
        <UsernameField
          id="dm-user"
          errorId="dm-error"
          value={username}
          error={error}
          placeholder="e.g. ann"
          onChange={(v) => {
            setUsername(v);
            setError('');
          }}
        />
        <FormActions onCancel={onClose} busy={busy} label="Start conversation" busyLabel="Opening…" />
      </form>
    </Modal>
  );
}

/** What AddMember's failure means, in words: NotFound names the user, InvalidArgument gives the field's message. */
export function addMemberError(err: unknown, username: string): string {
  if (err instanceof RpcError) {
    if (err.code === 'NOT_FOUND' && !/\broom\b/i.test(err.message)) return `No user named “${username}”.`;
    if (err.code === 'NOT_FOUND') return 'This room is gone, or you are no longer in it.';
    if (err.code === 'PERMISSION_DENIED') return 'Only members can add people to this room.';
    if (err.code === 'FAILED_PRECONDITION') return 'A direct conversation is for two people only.';
    const f = fieldError(err);
    if (f) return capitalize(f.reason.endsWith('.') ? f.reason : `${f.reason}.`);
  }
  return describeError(err);
}

const capitalize = (s: string) => (s ? s[0].toUpperCase() + s.slice(1) : s);

export function AddMemberDialog({
  roomName,
  onClose,
  add,
  onDone,
}: {
  roomName: string;
  onClose: () => void;
  add: (username: string) => Promise<{ already: boolean }>;
  onDone: (username: string, already: boolean) => void;
}) {
  const [username, setUsername] = useState('');
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);

  async function submit(e: FormEvent) {
    e.preventDefault();
    const u = username.trim().toLowerCase().replace(/^@/, '');
    if (!u) return setError('Enter a username.');
    setBusy(true);
    setError('');
    try {
      const r = await add(u);
      onDone(u, r.already);
    } catch (err) {
      setError(addMemberError(err, u));
      setBusy(false);
    }
  }

  return (
    <Modal title="Add member" onClose={onClose} describedBy="add-member-help">
      <form onSubmit={submit} noValidate>
        <p className="muted small modal-text" id="add-member-help">
          They will see <strong>{roomName}</strong> in their rooms and can read its history.
        </p>
        <UsernameField
          id="add-member-user"
          errorId="add-member-error"
          value={username}
          error={error}
          placeholder="e.g. bob"
          onChange={(v) => {
            setUsername(v);
            setError('');
          }}
        />
        <FormActions onCancel={onClose} busy={busy} label="Add" busyLabel="Adding…" />
      </form>
    </Modal>
  );
}

export function LeaveRoomDialog({ room, title, onClose, leave }: { room: Room; title: string; onClose: () => void; leave: () => Promise<void> }) {
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);
  const direct = room.visibility === RoomVisibility.DIRECT;
  const what = direct ? 'conversation' : 'room';
  const consequence =
    room.visibility === RoomVisibility.PRIVATE
      ? 'It is a private room: to come back, a member has to add you again.'
      : direct
        ? 'It comes back if either of you starts a direct conversation again.'
        : 'You can join it again from Browse.';

  const confirm = async () => {
    setBusy(true);
    setError('');
    try {
      await leave();
    } catch (e) {
      setError(describeError(e));
      setBusy(false);
    }
  };

  return (
    <Modal title={`Leave ${title}?`} onClose={onClose} describedBy="leave-room-text">
      <p className="modal-text" id="leave-room-text">
        It disappears from your rooms and you stop getting its messages. {consequence}
      </p>
      {error && (
        <p className="form-error" role="alert">
          {error}
        </p>
      )}
      <div className="modal-actions">
        <button type="button" onClick={onClose}>
          Cancel
        </button>
        <button className="primary danger" type="button" onClick={() => void confirm()} disabled={busy}>
          {busy ? 'Leaving…' : `Leave ${what}`}
        </button>
      </div>
    </Modal>
  );
}
