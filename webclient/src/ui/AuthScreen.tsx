import { useState, type FormEvent, type InputHTMLAttributes } from 'react';
import { RpcError } from '@protobuf-ts/runtime-rpc';
import { authClient, describeError, fieldError, session } from '../api';

type Mode = 'login' | 'signup';
type Errors = Partial<Record<'username' | 'password' | 'displayName' | 'confirm', string>>;

const USERNAME = /^[a-z0-9_.-]{3,32}$/;

/** Checks the form before it goes to the server; the messages sit next to the fields. */
export function validate(mode: Mode, v: { username: string; password: string; confirm: string; displayName: string }): Errors {
  const e: Errors = {};
  const u = v.username.trim();
  if (!u) e.username = 'Enter a username.';
  else if (mode === 'signup' && !USERNAME.test(u))
    e.username = '3 to 32 characters: lower-case letters, digits, dot, dash or underscore.';
  if (!v.password) e.password = 'Enter your password.';
  else if (mode === 'signup' && v.password.length < 8) e.password = 'Use at least 8 characters.';
  else if (mode === 'signup' && new TextEncoder().encode(v.password).length > 256) e.password = 'Use at most 256 bytes.';
  if (mode === 'signup' && v.confirm !== v.password) e.confirm = "The passwords don't match.";
  if (mode === 'signup' && [...v.displayName].length > 64) e.displayName = 'At most 64 characters.';
  return e;
}

export function AuthScreen() {
  const [mode, setMode] = useState<Mode>('login');
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  const [confirm, setConfirm] = useState('');
  const [displayName, setDisplayName] = useState('');
  const [errors, setErrors] = useState<Errors>({});
  const [formError, setFormError] = useState('');
  const [busy, setBusy] = useState(false);

  const switchMode = (m: Mode) => {
    setMode(m);
    setErrors({});
    setFormError('');
  };

  async function submit(ev: FormEvent) {
    ev.preventDefault();
    const e = validate(mode, { username, password, confirm, displayName });
    setErrors(e);
    setFormError('');
    if (Object.keys(e).length) {
      document.getElementById(`auth-${Object.keys(e)[0]}`)?.focus();
      return;
    }
    setBusy(true);
    try {
      const u = username.trim().toLowerCase();
      const r =
        mode === 'signup'
          ? (await authClient.signUp({ username: u, password, displayName: displayName.trim() }, { timeout: 20_000 })).response
          : (await authClient.login({ username: u, password }, { timeout: 20_000 })).response;
      if (!r.user || !r.tokens) throw new Error('The server sent an incomplete answer.');
      session.start(r.user, r.tokens);
    } catch (err) {
      const f = fieldError(err);
      if (f && (f.field === 'username' || f.field === 'password' || f.field === 'display_name')) {
        const key = f.field === 'display_name' ? 'displayName' : f.field;
        setErrors({ [key]: f.reason[0].toUpperCase() + f.reason.slice(1) + '.' });
      } else if (err instanceof RpcError && err.code === 'ALREADY_EXISTS') {
        setErrors({ username: 'That username is taken. Try another one.' });
      } else if (err instanceof RpcError && err.code === 'UNAUTHENTICATED' && mode === 'login') {
        setFormError('Wrong username or password.');
      } else {
        setFormError(describeError(err));
      }
    } finally {
      setBusy(false);
    }
  }

  const field = (
    id: keyof Errors,
    label: string,
    input: Omit<InputHTMLAttributes<HTMLInputElement>, 'value' | 'onChange'> & { value: string; onChange: (v: string) => void },
    hint?: string,
  ) => {
    const { onChange, ...rest } = input;
    const err = errors[id];
    return (
      <div className={`field${err ? ' invalid' : ''}`}>
        <label htmlFor={`auth-${id}`}>{label}</label>
        <input
          id={`auth-${id}`}
          {...rest}
          onChange={(e) => {
            onChange(e.target.value);
            if (errors[id]) setErrors({ ...errors, [id]: undefined });
          }}
          aria-invalid={err ? true : undefined}
          aria-describedby={err ? `auth-${id}-error` : hint ? `auth-${id}-hint` : undefined}
        />
        {err ? (
          <p className="field-error" id={`auth-${id}-error`} role="alert">
            {err}
          </p>
        ) : hint ? (
          <p className="field-hint" id={`auth-${id}-hint`}>
            {hint}
          </p>
        ) : null}
      </div>
    );
  };

  return (
    <main className="auth">
      <div className="auth-card">
        <div className="brand">
          <span className="logo" aria-hidden="true">
            <svg viewBox="0 0 32 32" width="28" height="28">
              <rect width="32" height="32" rx="9" fill="currentColor" />
              <path d="M9 10h14v9h-8l-4 4v-4H9z" fill="white" />
            </svg>
          </span>
          <span>Parley</span>
        </div>
        <h1>{mode === 'login' ? 'Welcome back' : 'Create your account'}</h1>
        <p className="muted">{mode === 'login' ? 'Sign in to pick up your conversations.' : 'Chat in rooms and one-to-one, in real time.'}</p>
        <div className="tabs" role="tablist" aria-label="Sign in or sign up">
          <button role="tab" type="button" aria-selected={mode === 'login'} onClick={() => switchMode('login')}>
            Log in
          </button>
          <button role="tab" type="button" aria-selected={mode === 'signup'} onClick={() => switchMode('signup')}>
            Sign up
          </button>
        </div>
        <form onSubmit={submit} noValidate aria-label={mode === 'login' ? 'Log in' : 'Sign up'}>
          {field(
            'username',
            'Username',
            { value: username, onChange: setUsername, autoComplete: 'username', autoCapitalize: 'none', spellCheck: false, autoFocus: true },
            mode === 'signup' ? 'Lower-case letters, digits, . _ -' : undefined,
          )}
          {mode === 'signup' &&
            field('displayName', 'Display name (optional)', { value: displayName, onChange: setDisplayName, autoComplete: 'nickname' })}
          {field('password', 'Password', {
            value: password,
            onChange: setPassword,
            type: 'password',
            autoComplete: mode === 'login' ? 'current-password' : 'new-password',
          }, mode === 'signup' ? 'At least 8 characters.' : undefined)}
          {mode === 'signup' &&
            field('confirm', 'Confirm password', { value: confirm, onChange: setConfirm, type: 'password', autoComplete: 'new-password' })}
          {formError && (
            <p className="form-error" role="alert">
              {formError}
            </p>
          )}
          <button className="primary wide" type="submit" disabled={busy}>
            {busy ? 'Please wait…' : mode === 'login' ? 'Log in' : 'Create account'}
          </button>
        </form>
        <p className="muted small center">
          {mode === 'login' ? 'New to Parley? ' : 'Already have an account? '}
          <button type="button" className="link" onClick={() => switchMode(mode === 'login' ? 'signup' : 'login')}>
            {mode === 'login' ? 'Create an account' : 'Log in'}
          </button>
        </p>
      </div>
    </main>
  );
}
