//! Every text of the console, in English and Russian. One struct, two
//! values: a text missing from either language does not compile.

use crate::config::Language;

pub struct Texts {
    pub lang: &'static str,
    pub overview: &'static str,
    pub leads: &'static str,
    pub calls: &'static str,
    pub deals: &'static str,
    pub pools: &'static str,
    pub outbox: &'static str,
    pub sign_in: &'static str,
    pub sign_out: &'static str,
    pub user: &'static str,
    pub user_hint: &'static str,
    pub password: &'static str,
    pub bad_sign_in: &'static str,
    pub id: &'static str,
    pub date: &'static str,
    pub kind: &'static str,
    pub form_or_number: &'static str,
    pub name: &'static str,
    pub phone: &'static str,
    pub visit: &'static str,
    pub comment: &'static str,
    pub outcome: &'static str,
    pub from: &'static str,
    pub to: &'static str,
    pub any: &'static str,
    pub call: &'static str,
    pub form: &'static str,
    pub created: &'static str,
    pub duplicate: &'static str,
    pub no_deal: &'static str,
    pub channel: &'static str,
    pub search: &'static str,
    pub search_hint: &'static str,
    pub apply: &'static str,
    pub reset: &'static str,
    pub older: &'static str,
    pub newest: &'static str,
    pub nothing: &'static str,
    pub status: &'static str,
    pub duration: &'static str,
    pub hangup: &'static str,
    pub caller: &'static str,
    pub number: &'static str,
    pub recording: &'static str,
    pub title: &'static str,
    pub group: &'static str,
    pub change: &'static str,
    pub pool: &'static str,
    pub held_by: &'static str,
    pub held_for: &'static str,
    pub free: &'static str,
    pub exhaustions: &'static str,
    pub exhaustions_none: &'static str,
    pub taken_from: &'static str,
    pub at: &'static str,
    pub state: &'static str,
    pub attempts: &'static str,
    pub error: &'static str,
    pub event: &'static str,
    /// The outbox's event column for the call webhooks (C-2a).
    pub call_start_event: &'static str,
    pub call_end_event: &'static str,
    pub lead: &'static str,
    pub retry: &'static str,
    pub pending: &'static str,
    pub failed: &'static str,
    pub calls_per_hour: &'static str,
    pub leads_per_channel: &'static str,
    pub last_24h: &'static str,
    pub last_7d: &'static str,
    pub sip_health: &'static str,
    pub storage_error: &'static str,
    pub bad_filter: &'static str,
    pub seconds: &'static str,
    pub live: &'static str,
    pub ladder: &'static str,
    pub recorded: &'static str,
    pub partial: &'static str,
    pub not_recorded: &'static str,
    /// A recording another node of the cluster holds: its link opens there.
    pub play_on_node: &'static str,
    /// Key presses (RFC 4733) heard in a call.
    pub dtmf: &'static str,
    /// Whose key press: the caller's, the callee's.
    pub by_caller: &'static str,
    pub by_callee: &'static str,
    pub searched_to: &'static str,
    pub search_on: &'static str,
    pub ladder_off: &'static str,
    pub ladder_none: &'static str,
    pub ladder_dropped: &'static str,
    /// The words the store keeps in English (call statuses, who hung up,
    /// status groups), as shown: (stored word, shown word).
    pub words: &'static [(&'static str, &'static str)],
    /// The SIP thread's counters on the overview, as shown: (counter,
    /// label). The Russian page listed the raw names (trial, 2026-12-02).
    pub counters: &'static [(&'static str, &'static str)],
    /// The calls chart's scale: "max 31".
    pub chart_max: &'static str,
    /// A lead's outcome as stored (`deal 5 created`), as shown: (stored
    /// prefix, shown prefix, stored suffix, shown suffix).
    pub outcomes: &'static [(&'static str, &'static str, &'static str, &'static str)],
    /// What a call lead's stored title and text (`leads::pipeline::
    /// call_lead`, English) read as in this language.
    pub incoming_call_from: &'static str,
    pub incoming_call_withheld: &'static str,
    pub call_to: &'static str,
    /// A call lead's caller who withheld the number.
    pub withheld: &'static str,
    /// A deal's comments and tasks (the deals page).
    pub comments: &'static str,
    pub tasks: &'static str,
    pub task: &'static str,
    /// The footer: which zone the page's times are in (`crm.timezone`).
    pub times_in: &'static str,
}

impl Texts {
    /// A stored word as shown in this language (the word itself when
    /// there is no translation).
    /// A SIP counter's label in this language (its name when unknown).
    pub fn counter<'a>(&self, name: &'a str) -> &'a str
    where
        'static: 'a,
    {
        self.counters
            .iter()
            .find(|(k, _)| *k == name)
            .map_or(name, |(_, v)| v)
    }

    pub fn word(&self, stored: &str) -> String {
        self.words
            .iter()
            .find(|(k, _)| *k == stored)
            .map_or_else(|| stored.to_string(), |(_, v)| (*v).to_string())
    }

    /// A call lead's stored title or text as shown in this language
    /// (trial, 2026-12-02: "Incoming call from …" on the Russian page),
    /// its numbers written by `phone` as the phone column writes them
    /// (trial, 2026-12-03: `Incoming call from 4930123456` beside
    /// `+4930123456`); anything else (a form's own title and text) as it
    /// is.
    pub fn stored(&self, s: &str, phone: &dyn Fn(&str) -> String) -> String {
        // A deal's comment on a repeat call: "<title>: <text>" (trial,
        // 2026-12-03: its numbers stayed raw beside formatted ones).
        if let Some((title, text)) = s.split_once(": ") {
            if title == EN.incoming_call_withheld || title.starts_with(EN.incoming_call_from) {
                return format!(
                    "{}: {}",
                    self.stored(title, phone),
                    self.stored(text, phone)
                );
            }
        }
        if s == EN.incoming_call_withheld {
            return self.incoming_call_withheld.to_string();
        }
        if let Some(caller) = s.strip_prefix(EN.incoming_call_from) {
            return format!("{}{}", self.incoming_call_from, phone(caller));
        }
        // "Call to <dialed> (<status>, <n> s)"
        let call = s.strip_prefix(EN.call_to).and_then(|rest| {
            let (dialed, tail) = rest.rsplit_once(" (")?;
            let (status, secs) = tail.strip_suffix(" s)")?.split_once(", ")?;
            secs.bytes().all(|c| c.is_ascii_digit()).then(|| {
                format!(
                    "{}{} ({}, {secs} {})",
                    self.call_to,
                    phone(dialed),
                    self.word(status),
                    self.seconds
                )
            })
        });
        call.unwrap_or_else(|| s.to_string())
    }

    /// A lead's stored outcome as shown in this language.
    pub fn outcome(&self, stored: &str) -> String {
        for (prefix, shown, suffix, shown_suffix) in self.outcomes {
            if let Some(rest) = stored.strip_prefix(prefix) {
                if let Some(middle) = rest.strip_suffix(suffix) {
                    return format!("{shown}{middle}{shown_suffix}");
                }
            }
        }
        stored.to_string()
    }
}

pub const EN: Texts = Texts {
    lang: "en",
    overview: "Overview",
    leads: "Leads",
    calls: "Calls",
    deals: "Deals",
    pools: "Pools",
    outbox: "Outbox",
    sign_in: "Sign in",
    sign_out: "Sign out",
    user: "User",
    user_hint: "empty to sign in with the API token",
    password: "Password or API token",
    bad_sign_in: "Wrong user or password.",
    id: "id",
    date: "date",
    kind: "type",
    form_or_number: "form / number",
    name: "name",
    phone: "phone",
    visit: "visit / channel",
    comment: "comment",
    outcome: "outcome",
    from: "from",
    to: "to",
    any: "any",
    call: "call",
    form: "form",
    created: "deal created",
    duplicate: "duplicate",
    no_deal: "no deal",
    channel: "channel",
    search: "search",
    search_hint: "phone or start of a name",
    apply: "Apply",
    reset: "Reset",
    older: "Older",
    newest: "Newest",
    nothing: "Nothing here.",
    status: "status",
    duration: "duration",
    hangup: "hung up",
    caller: "caller",
    number: "number",
    recording: "recording",
    title: "title",
    group: "group",
    change: "Change",
    pool: "pool",
    held_by: "held by visit",
    held_for: "since its last page view",
    free: "free",
    exhaustions: "Pool exhaustion (a held number was taken)",
    exhaustions_none: "No pool ran out of numbers.",
    taken_from: "taken from visit",
    at: "at",
    state: "state",
    attempts: "attempts",
    error: "CRM error",
    event: "event",
    call_start_event: "call start",
    call_end_event: "call end",
    lead: "lead",
    retry: "Retry",
    pending: "pending",
    failed: "failed",
    calls_per_hour: "Calls per hour by status",
    leads_per_channel: "Leads per channel",
    last_24h: "last 24 h",
    last_7d: "last 7 days",
    sip_health: "SIP health",
    storage_error: "The database does not answer; try again.",
    bad_filter: "Filter not understood",
    seconds: "s",
    live: "live",
    ladder: "SIP",
    recorded: "recorded",
    partial: "partly recorded",
    not_recorded: "not recorded",
    play_on_node: "play on",
    dtmf: "keys",
    by_caller: "caller",
    by_callee: "callee",
    searched_to: "Searched back to lead",
    search_on: "Search older leads",
    ladder_off: "SIP ladders are off (ui.sip_trace_minutes = 0).",
    ladder_none:
        "No SIP messages kept for this call (older than ui.sip_trace_minutes, or before a restart).",
    ladder_dropped: "Messages past the per-call limit, not kept",
    words: &[
        ("timeout", "time limit"),
        ("shutdown", "siptrack stopped"),
        ("interrupted", "siptrack crashed"),
        ("not_counted", "not counted"),
        ("in_progress", "in progress"),
    ],
    counters: &[
        ("received", "messages received"),
        ("unparsable", "could not be parsed"),
        ("invalid", "refused as invalid"),
        ("oversized", "too large to read"),
        ("untrusted", "from untrusted sources"),
        ("stray_responses", "stray responses"),
        ("wrong_source", "from the wrong source"),
        ("in_dialog_refused", "in-dialog requests refused"),
        ("replies_suppressed", "replies not sent"),
        ("too_large", "too large for UDP"),
        ("absorbed_retransmissions", "retransmissions absorbed"),
        ("retransmissions_sent", "retransmissions sent"),
        ("requests_forwarded", "requests forwarded"),
        ("responses_forwarded", "responses forwarded"),
        ("local_replies", "own replies"),
        ("timeouts", "transaction timeouts"),
        ("dialogs", "open dialogs"),
        ("transactions", "open transactions"),
    ],
    chart_max: "max",
    // A lead joined to a client's deal went to the CRM as a comment or a
    // task on it; "duplicate" read as dropped beside "duplicate of lead",
    // which sends nothing (trial, 2026-12-03). The stored outcome (API,
    // lead log) keeps its words.
    outcomes: &[("duplicate of deal ", "added to deal ", "", "")],
    incoming_call_from: "Incoming call from ",
    incoming_call_withheld: "Incoming call from a withheld number",
    call_to: "Call to ",
    withheld: "number withheld",
    comments: "comments",
    tasks: "tasks",
    task: "task",
    times_in: "Times on this page:",
};

pub const RU: Texts = Texts {
    lang: "ru",
    overview: "Обзор",
    leads: "Заявки",
    calls: "Звонки",
    deals: "Сделки",
    pools: "Пулы",
    outbox: "Очередь CRM",
    sign_in: "Войти",
    sign_out: "Выйти",
    user: "Пользователь",
    user_hint: "пусто — вход по токену API",
    password: "Пароль или токен API",
    bad_sign_in: "Неверный пользователь или пароль.",
    id: "№",
    date: "дата",
    kind: "тип",
    form_or_number: "форма / номер",
    name: "имя",
    phone: "телефон",
    visit: "визит / канал",
    comment: "комментарий",
    outcome: "результат",
    from: "с",
    to: "по",
    any: "все",
    call: "звонок",
    form: "форма",
    created: "сделка создана",
    duplicate: "дубль",
    no_deal: "без сделки",
    channel: "канал",
    search: "поиск",
    search_hint: "телефон или начало имени",
    apply: "Применить",
    reset: "Сбросить",
    older: "Раньше",
    newest: "Новые",
    nothing: "Здесь пусто.",
    status: "статус",
    duration: "длительность",
    hangup: "кто положил трубку",
    caller: "кто звонил",
    number: "номер",
    recording: "запись",
    title: "название",
    group: "группа",
    change: "Изменить",
    pool: "пул",
    held_by: "занят визитом",
    held_for: "с последнего просмотра",
    free: "свободен",
    exhaustions: "Нехватка номеров (занятый номер отдан другому)",
    exhaustions_none: "Номеров хватало во всех пулах.",
    taken_from: "отнят у визита",
    at: "когда",
    state: "состояние",
    attempts: "попыток",
    error: "ошибка CRM",
    event: "событие",
    call_start_event: "начало звонка",
    call_end_event: "конец звонка",
    lead: "заявка",
    retry: "Повторить",
    pending: "в очереди",
    failed: "не доставлено",
    calls_per_hour: "Звонки по часам и статусам",
    leads_per_channel: "Заявки по каналам",
    last_24h: "24 часа",
    last_7d: "7 дней",
    sip_health: "Состояние SIP",
    storage_error: "База данных не отвечает; попробуйте ещё раз.",
    bad_filter: "Фильтр не понят",
    seconds: "с",
    live: "в реальном времени",
    ladder: "SIP",
    recorded: "записан",
    partial: "записан частично",
    not_recorded: "не записан",
    play_on_node: "слушать на",
    dtmf: "нажатия",
    by_caller: "звонивший",
    by_callee: "принявший",
    searched_to: "Просмотрены заявки до №",
    search_on: "Искать среди более старых",
    ladder_off: "SIP-диаграммы выключены (ui.sip_trace_minutes = 0).",
    ladder_none: "Для этого звонка SIP-сообщения не сохранены (старше ui.sip_trace_minutes или до перезапуска).",
    ladder_dropped: "Сообщений сверх предела на звонок, не сохранено",
    words: &[
        ("answered", "отвечен"),
        ("missed", "пропущен"),
        ("busy", "занято"),
        ("cancelled", "отменён"),
        ("failed", "не состоялся"),
        ("caller", "звонивший"),
        ("callee", "принявший"),
        ("timeout", "по лимиту времени"),
        ("shutdown", "остановка siptrack"),
        ("interrupted", "сбой siptrack"),
        ("not_counted", "не учитывается"),
        ("in_progress", "в работе"),
        ("paid", "оплачено"),
    ],
    counters: &[
        ("received", "принято сообщений"),
        ("unparsable", "не разобрано"),
        ("invalid", "с ошибками"),
        ("oversized", "слишком большие"),
        ("untrusted", "от недоверенных источников"),
        ("stray_responses", "ответы без транзакции"),
        ("wrong_source", "с чужого адреса"),
        ("in_dialog_refused", "отклонено в диалогах"),
        ("replies_suppressed", "ответы не отправлены"),
        ("too_large", "слишком большие для UDP"),
        ("absorbed_retransmissions", "поглощено повторов"),
        ("retransmissions_sent", "отправлено повторов"),
        ("requests_forwarded", "передано запросов"),
        ("responses_forwarded", "передано ответов"),
        ("local_replies", "собственные ответы"),
        ("timeouts", "тайм-ауты транзакций"),
        ("dialogs", "открытые диалоги"),
        ("transactions", "открытые транзакции"),
    ],
    chart_max: "макс.",
    outcomes: &[
        ("deal ", "сделка ", " created", " создана"),
        ("duplicate of lead ", "дубль заявки ", "", ""),
        ("duplicate of deal ", "добавлена к сделке ", "", ""),
        ("no deal: calls create no deals", "без сделки: звонки не создают сделок", "", ""),
        ("crm error: ", "ошибка CRM: ", "", ""),
    ],
    incoming_call_from: "Входящий звонок с ",
    incoming_call_withheld: "Входящий звонок со скрытого номера",
    call_to: "Звонок на ",
    withheld: "номер скрыт",
    comments: "комментарии",
    tasks: "задачи",
    task: "задача",
    times_in: "Время на странице:",
};

pub fn texts(lang: Language) -> &'static Texts {
    match lang {
        Language::En => &EN,
        Language::Ru => &RU,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call lead's title and text (stored in English) read in the
    /// console's language; a form's own words stay as written.
    #[test]
    fn stored_call_titles_and_texts_are_shown_in_the_language_table() {
        for (t, stored, shown) in [
            (
                &RU,
                "Incoming call from 79161234567",
                "Входящий звонок с 79161234567",
            ),
            (
                &RU,
                "Incoming call from a withheld number",
                "Входящий звонок со скрытого номера",
            ),
            (
                &RU,
                "Call to 74951110001 (answered, 65 s)",
                "Звонок на 74951110001 (отвечен, 65 с)",
            ),
            (
                &RU,
                "Call to 74951110001 (busy, 0 s)",
                "Звонок на 74951110001 (занято, 0 с)",
            ),
            (
                &RU,
                "Call to me (please), soon s)",
                "Call to me (please), soon s)",
            ),
            (&RU, "Please call me back", "Please call me back"),
            (
                &EN,
                "Call to 74951110001 (answered, 65 s)",
                "Call to 74951110001 (answered, 65 s)",
            ),
            (
                &EN,
                "Incoming call from 79161234567",
                "Incoming call from 79161234567",
            ),
        ] {
            assert_eq!(t.stored(stored, &|p| p.to_string()), shown, "{stored}");
        }
        // The numbers as the phone column writes them.
        let plus = |p: &str| format!("+{p}");
        assert_eq!(
            RU.stored("Call to 74951110001 (answered, 65 s)", &plus),
            "Звонок на +74951110001 (отвечен, 65 с)"
        );
        assert_eq!(
            EN.stored("Incoming call from 4930123456", &plus),
            "Incoming call from +4930123456"
        );
        assert_eq!(EN.stored("Please call me", &plus), "Please call me");
        // A deal's comment on a repeat call: title and text, each shown.
        assert_eq!(
            RU.stored(
                "Incoming call from 79161234567: Call to 74951110001 (answered, 1 s)",
                &plus
            ),
            "Входящий звонок с +79161234567: Звонок на +74951110001 (отвечен, 1 с)"
        );
        assert_eq!(
            EN.stored("Incoming call from a withheld number: Call me: now", &plus),
            "Incoming call from a withheld number: Call me: now"
        );
    }

    /// What the store keeps in English reads in the console's language.
    #[test]
    fn stored_words_and_outcomes_are_shown_in_the_language() {
        for (t, stored, shown) in [
            (&RU, "answered", "отвечен"),
            (&RU, "callee", "принявший"),
            (&RU, "in_progress", "в работе"),
            (&RU, "Won", "Won"),
            (&EN, "in_progress", "in progress"),
            (&EN, "answered", "answered"),
        ] {
            assert_eq!(t.word(stored), shown, "{stored}");
        }
        for (t, stored, shown) in [
            (&RU, "deal 65 created", "сделка 65 создана"),
            (&RU, "duplicate of lead 5", "дубль заявки 5"),
            (&RU, "duplicate of deal 2", "добавлена к сделке 2"),
            (&EN, "duplicate of deal 2", "added to deal 2"),
            (&EN, "duplicate of lead 5", "duplicate of lead 5"),
            (&RU, "crm error: HTTP 500", "ошибка CRM: HTTP 500"),
            (
                &RU,
                "no deal: calls create no deals",
                "без сделки: звонки не создают сделок",
            ),
            (&RU, "something new", "something new"),
            (&EN, "deal 65 created", "deal 65 created"),
        ] {
            assert_eq!(t.outcome(stored), shown, "{stored}");
        }
    }
}
