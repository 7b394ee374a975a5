// Which conversations the swarm dashboard started, so that the chat workspace
// can keep them out of its sidebar.
//
// A conversation carries no metadata the client can set (the batch endpoint
// takes a title, a model and a system prompt, and only the title comes back in
// the conversation list), so the dashboard marks its conversations by title:
// "swarm · started <date and time>". Renaming one makes it an ordinary
// conversation again. Swarms started before this marker existed were titled
// exactly "swarm"; they count too.

export const SWARM_TITLE_PREFIX = "swarm · ";
const LEGACY_SWARM_TITLE = "swarm";

const two = (n) => String(n).padStart(2, "0");

/** The title the dashboard gives the conversations it starts. */
export function swarmTitle(when = new Date()) {
  const date = `${when.getFullYear()}-${two(when.getMonth() + 1)}-${two(when.getDate())}`;
  const time = `${two(when.getHours())}:${two(when.getMinutes())}:${two(when.getSeconds())}`;
  return `${SWARM_TITLE_PREFIX}started ${date} ${time}`;
}

/** Whether `conv` (a conversation object of the protocol) was started by the swarm dashboard. */
export function isSwarmConversation(conv) {
  const title = conv?.title ?? "";
  return title === LEGACY_SWARM_TITLE || title.startsWith(SWARM_TITLE_PREFIX);
}
