//! recjoin's joiner: the event-time feature/action join and the `recjoin` command.
