// Server-Sent Events over fetch(), so the token can go in a header (EventSource cannot send one).
import { failure, headers } from "./api.js";

// Parse an SSE byte stream; calls onEvent({event, data, id}) per dispatched event.
export async function readEvents(body, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = { event: "message", data: [], id: null };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = buffer.slice(0, end);
      buffer = buffer.slice(end + (buffer.startsWith("\r\n", end) ? 2 : 1));
      if (line === "") {
        if (event.data.length) onEvent({ event: event.event, data: event.data.join("\n"), id: event.id });
        event = { event: "message", data: [], id: event.id };
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") event.event = text;
      else if (field === "data") event.data.push(text);
      else if (field === "id") event.id = text;
    }
  }
}

// Follow an SSE endpoint until stopped: reconnects (resuming from the last id) after a dropped
// stream, at most once a second; an answer that is not 2xx goes to onError and ends it when fatal.
export function follow(path, { onEvent, onOpen, onError, isFatal }) {
  const controller = new AbortController();
  let lastId = null;
  let stopped = false;
  (async () => {
    while (!stopped) {
      const started = Date.now();
      try {
        const extra = { Accept: "text/event-stream" };
        if (lastId !== null) extra["Last-Event-ID"] = lastId;
        const response = await fetch(path, { headers: headers(extra), signal: controller.signal, cache: "no-store" });
        if (!response.ok) {
          const error = await failure(response);
          onError(error);
          if (isFatal(error)) return;
        } else {
          onOpen?.();
          await readEvents(response.body, (e) => {
            if (e.id !== null) lastId = e.id;
            onEvent(e);
          });
          if (stopped) return;
        }
      } catch (error) {
        if (stopped || error.name === "AbortError") return;
        onError(error);
      }
      await new Promise((r) => setTimeout(r, Math.max(0, 1000 - (Date.now() - started))));
    }
  })();
  return () => {
    stopped = true;
    controller.abort();
  };
}
