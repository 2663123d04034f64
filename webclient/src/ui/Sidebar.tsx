import { useMemo, useState } from 'react';
import type { User } from '@gen/parley/v1/auth';
import { RoomVisibility } from '@gen/parley/v1/rooms';
import { roomsByActivity, roomTitle, type ChatState } from '../state/store';
import { Avatar } from './Avatar';
import { formatShort } from './util';

interface Props {
  me: User;
  state: ChatState;
  activeId: string | null;
  onOpen: (id: string) => void;
  onNewRoom: () => void;
  onBrowse: () => void;
  onDirect: () => void;
  onLogout: () => void;
}

export function Sidebar({ me, state, activeId, onOpen, onNewRoom, onBrowse, onDirect, onLogout }: Props) {
  const [filter, setFilter] = useState('');
  const rooms = useMemo(() => {
    const q = filter.trim().toLowerCase();
    return roomsByActivity(state.rooms).filter((e) => !q || roomTitle(e.room, me.username).toLowerCase().includes(q));
  }, [state.rooms, filter, me.username]);
  const totalUnread = Object.values(state.rooms).reduce((n, e) => n + e.unread, 0);

  return (
    <aside className="sidebar" aria-label="Rooms">
      <header className="sidebar-head">
        <div className="brand small">
          <span className="logo" aria-hidden="true">
            <svg viewBox="0 0 32 32" width="22" height="22">
              <rect width="32" height="32" rx="9" fill="currentColor" />
              <path d="M9 10h14v9h-8l-4 4v-4H9z" fill="white" />
            </svg>
          </span>
          <span>Parley</span>
          {totalUnread > 0 && <span className="sr-only">{totalUnread} unread messages</span>}
        </div>
        <div className="me">
          <Avatar id={me.userId} name={me.displayName || me.username} size={30} online={state.conn === 'online'} />
          <span className="me-name" title={`Signed in as ${me.username}`}>
            {me.displayName || me.username}
          </span>
          <button className="ghost small" onClick={onLogout}>
            Log out
          </button>
        </div>
      </header>
      <div className="sidebar-actions">
        <button className="primary" onClick={onNewRoom}>
          <svg viewBox="0 0 24 24" width="16" height="16" aria-hidden="true">
            <path d="M12 5v14M5 12h14" stroke="currentColor" strokeWidth="2.4" strokeLinecap="round" />
          </svg>
          New room
        </button>
        <button onClick={onBrowse}>Browse</button>
        <button onClick={onDirect}>Direct</button>
      </div>
      <div className="search">
        <label htmlFor="room-filter" className="sr-only">
          Filter rooms
        </label>
        <input id="room-filter" type="search" placeholder="Search rooms" value={filter} onChange={(e) => setFilter(e.target.value)} />
      </div>
      <nav className="room-list" aria-label="Your rooms">
        {!state.roomsLoaded && !state.roomsError && <p className="muted pad">Loading your rooms…</p>}
        {state.roomsError && <p className="form-error pad">{state.roomsError}</p>}
        {state.roomsLoaded && rooms.length === 0 && (
          <div className="pad muted">
            {filter ? 'No room matches.' : 'No rooms yet. Create one, browse public rooms or message someone directly.'}
          </div>
        )}
        <ul>
          {rooms.map((e) => {
            const title = roomTitle(e.room, me.username);
            const last = e.lastMessage;
            const preview = last ? `${last.senderId === me.userId ? 'You' : last.senderUsername}: ${last.body}` : e.room.topic || 'No messages yet';
            return (
              <li key={e.room.roomId}>
                <a
                  href={`#/room/${encodeURIComponent(e.room.roomId)}`}
                  className={`room-item${activeId === e.room.roomId ? ' active' : ''}${e.unread ? ' has-unread' : ''}`}
                  aria-current={activeId === e.room.roomId ? 'page' : undefined}
                  data-room={title}
                  onClick={(ev) => {
                    ev.preventDefault();
                    onOpen(e.room.roomId);
                  }}
                >
                  <Avatar id={e.room.roomId} name={title} size={42} square={e.room.visibility !== RoomVisibility.DIRECT} />
                  <span className="room-text">
                    <span className="room-line">
                      <span className="room-name">
                        {e.room.visibility === RoomVisibility.PRIVATE && (
                          <svg className="lock" viewBox="0 0 24 24" width="13" height="13" role="img" aria-label="private">
                            <path d="M7 10V7a5 5 0 0 1 10 0v3h1a1 1 0 0 1 1 1v9a1 1 0 0 1-1 1H6a1 1 0 0 1-1-1v-9a1 1 0 0 1 1-1zm2 0h6V7a3 3 0 0 0-6 0z" fill="currentColor" />
                          </svg>
                        )}
                        {title}
                      </span>
                      {last && <time className="room-time">{formatShort(last.time)}</time>}
                    </span>
                    <span className="room-line">
                      <span className="room-preview">{preview}</span>
                      {e.unread > 0 && (
                        <span className="badge" aria-label={`${e.unread} unread`}>
                          {e.unread > 99 ? '99+' : e.unread}
                        </span>
                      )}
                    </span>
                  </span>
                </a>
              </li>
            );
          })}
        </ul>
      </nav>
    </aside>
  );
}
