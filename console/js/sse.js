// Reading `text/event-stream` from a fetch() Response. EventSource cannot send an
// Authorization header, so the console reads the stream itself. The parser follows the
// HTML standard's rules: lines end with CRLF, LF or CR; a blank line dispatches the event;
// lines starting with ':' are comments (keep-alives); `data` lines are joined with '\n'.

/**
 * Parse an event stream. Calls `onEvent({event, data, id})` for each message and
 * `onComment(text)` for each comment line. Resolves when the stream ends; rejects when it
 * fails (an abort rejects with an AbortError).
 */
export async function readEventStream(response, { onEvent, onComment = () => {} }) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  const parser = eventStreamParser(onEvent, onComment);
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      parser.push(value);
    }
    parser.end();
  } finally {
    reader.releaseLock?.();
  }
}

/** The line parser on its own (push text as it comes; `end()` at the end of the stream). */
export function eventStreamParser(onEvent, onComment = () => {}) {
  let buffer = '';
  let first = true;
  let event = '';
  let data = [];
  let id = null;

  const line = (text) => {
    if (text === '') {
      if (data.length) onEvent({ event: event || 'message', data: data.join('\n'), id });
      event = '';
      data = [];
      return;
    }
    if (text.startsWith(':')) {
      onComment(text.slice(1).trim());
      return;
    }
    const colon = text.indexOf(':');
    const field = colon === -1 ? text : text.slice(0, colon);
    let value = colon === -1 ? '' : text.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') event = value;
    else if (field === 'data') data.push(value);
    else if (field === 'id' && !value.includes('\0')) id = value;
    // `retry` and unknown fields are ignored
  };

  return {
    push(text) {
      buffer += text;
      if (first && buffer.length) {
        if (buffer.charCodeAt(0) === 0xfeff) buffer = buffer.slice(1);
        first = false;
      }
      let start = 0;
      for (let i = 0; i < buffer.length; i++) {
        const c = buffer[i];
        if (c !== '\n' && c !== '\r') continue;
        if (c === '\r' && i === buffer.length - 1) break; // a CR at the end: wait for a possible LF
        line(buffer.slice(start, i));
        if (c === '\r' && buffer[i + 1] === '\n') i++;
        start = i + 1;
      }
      buffer = buffer.slice(start);
    },
    end() {
      // an event without its blank line at the end of the stream is dropped, as browsers do
      buffer = '';
      data = [];
    },
    /** The id of the last event seen (for Last-Event-ID when reconnecting). */
    get lastId() {
      return id;
    },
  };
}
