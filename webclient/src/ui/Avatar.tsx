import { colorFor, initials } from './util';

export function Avatar({ id, name, size = 36, online, square }: { id: string; name: string; size?: number; online?: boolean; square?: boolean }) {
  return (
    <span
      className={`avatar${square ? ' square' : ''}`}
      style={{ width: size, height: size, background: colorFor(id), fontSize: Math.round(size * 0.38) }}
      aria-hidden="true"
    >
      {initials(name)}
      {online !== undefined && <span className={`dot ${online ? 'on' : 'off'}`} />}
    </span>
  );
}
