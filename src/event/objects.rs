//! The normalized objects of a record: visitor, chat, offline message, wrap-up, agent.
//! Each is declared once, with `payload_object!` (in the parent module).

use serde::Serialize;
use serde_json::{Map, Value};

use super::fields::{
    utc_offset_minutes, Attachment, CustomField, CustomVariable, Fields, Text, VisitorStatus,
};
use super::shape::{sorted, Key, Kind, Shape};
use super::time::Timestamp;

payload_object! {
    /// The website visitor.
    Visitor {
        /// Comm100 visitor id, as text.
        id: Option<Text<'a>> = id("id"),
        /// Chat the event is about (the offline message id in Offline Message Submitted).
        chat_id: Option<Text<'a>> = id("chat_id"),
        /// Name entered by the visitor.
        name: Option<Text<'a>> = text("name"),
        /// E-mail entered by the visitor.
        email: Option<Text<'a>> = text("email"),
        /// Phone entered by the visitor.
        phone: Option<Text<'a>> = text("phone"),
        /// Company entered by the visitor.
        company: Option<Text<'a>> = text("company"),
        /// Product or service chosen in the pre-chat form.
        product_service: Option<Text<'a>> = text("product_service"),
        /// Department: a GUID, a decimal id or a name; null for none (Comm100's -1 or empty).
        department: Option<Text<'a>> = department("department"),
        /// Routing skill GUID (newer Comm100 platforms only).
        skill: Option<Text<'a>> = text("skill"),
        /// Visitor status when the event was sent.
        status: Option<VisitorStatus> = visitor_status("status"),
        /// The visitor's UTC offset as Comm100 sends it, e.g. `GMT -08:00`.
        time_zone: Option<Text<'a>> = text("time_zone"),
        /// `time_zone` in minutes east of UTC, when it parses.
        utc_offset_minutes: Option<i32> = derived(),
        /// Visitor IP address.
        ip: Option<Text<'a>> = text("ip"),
        /// Geo-IP city.
        city: Option<Text<'a>> = text("city"),
        /// Geo-IP region.
        state: Option<Text<'a>> = text("state"),
        /// Geo-IP country name.
        country: Option<Text<'a>> = text("country"),
        /// Browser language.
        language: Option<Text<'a>> = text("language"),
        /// Browser name and version.
        browser: Option<Text<'a>> = text("browser"),
        /// Operating system.
        operating_system: Option<Text<'a>> = text("operating_system"),
        /// Screen resolution.
        screen_resolution: Option<Text<'a>> = text("screen_resolution"),
        /// Flash plug-in version (legacy).
        flash_version: Option<Text<'a>> = text("flash_version"),
        /// Page the visitor is on.
        current_browsing: Option<Text<'a>> = text("current_browsing"),
        /// First page of the visit.
        landing_page: Option<Text<'a>> = text("landing_page"),
        /// Page the visitor came from.
        referrer_url: Option<Text<'a>> = text("referrer_url"),
        /// Referring search engine.
        search_engine: Option<Text<'a>> = text("search_engine"),
        /// Search keywords.
        keywords: Option<Text<'a>> = text("keywords"),
        /// Chats this visitor has had, all time.
        chats: Option<u64> = count("chats"),
        /// Visits, all time.
        visits: Option<u64> = count("visits"),
        /// Pages viewed.
        page_views: Option<u64> = count("page_views"),
        /// First visit.
        first_visit_time: Option<Timestamp> = time("first_visit_time"),
        /// Start of the current visit.
        visit_time: Option<Timestamp> = time("visit_time"),
        /// Pre-chat form fields.
        custom_fields: Vec<CustomField<'a>> = custom_fields("custom_fields"),
        /// Custom variables: the entries of payload `custom_variables` and `custom_variable`,
        /// both when both are sent.
        custom_variables: Vec<CustomVariable<'a>> =
            custom_variables("custom_variables", "custom_variable"),
    }
    then |visitor| {
        visitor.utc_offset_minutes = visitor.time_zone.as_deref().and_then(utc_offset_minutes);
    }
}

payload_object! {
    /// The chat (Chat Ended, Chat Transferred).
    Chat {
        /// Chat id.
        id: Option<Text<'a>> = id("id"),
        /// Visitor name.
        name: Option<Text<'a>> = text("name"),
        /// Visitor e-mail.
        email: Option<Text<'a>> = text("email"),
        /// Visitor phone.
        phone: Option<Text<'a>> = text("phone"),
        /// Visitor company.
        company: Option<Text<'a>> = text("company"),
        /// Product or service.
        product_service: Option<Text<'a>> = text("product_service"),
        /// Department name (or id) of the chat; null for none.
        department: Option<Text<'a>> = department("department"),
        /// Routing skill.
        skill: Option<Text<'a>> = text("skill"),
        /// Display names of the agents in the chat (not ids).
        operators: Vec<Text<'a>> = operators("operators"),
        /// Start of the chat.
        start_time: Option<Timestamp> = time("start_time"),
        /// End of the chat.
        end_time: Option<Timestamp> = time("end_time"),
        /// Time in the queue as Comm100 writes it, e.g. `6s`.
        waiting_time: Option<Text<'a>> = text("waiting_time"),
        /// Visitor's rating, as text.
        rating: Option<Text<'a>> = text("rating"),
        /// Visitor's rating comment.
        rating_comment: Option<Text<'a>> = text("rating_comment"),
        /// Agent's note.
        operator_comment: Option<Text<'a>> = text("operator_comment"),
        /// The transcript's messages: payload `chat_transcript` split on ⊙ when it has one (a
        /// newline stays inside its message), else on newlines; empty entries dropped.
        transcript: Vec<Text<'a>> = transcript("chat_transcript"),
        /// Files exchanged in the chat.
        attachment: Vec<Attachment<'a>> = attachments("attachment"),
        /// Pre-chat form fields.
        custom_fields: Vec<CustomField<'a>> = custom_fields("custom_fields"),
        /// Custom variables (payload `custom_variable`).
        custom_variables: Vec<CustomVariable<'a>> =
            custom_variables("custom_variables", "custom_variable"),
        /// The wrap-up, if saved before the event.
        wrap_up: Option<Wrapup<'a>> = wrapup("wrap_up"),
    }
}

payload_object! {
    /// A message left while no agent was available.
    OfflineMessage {
        /// Offline message id.
        id: Option<Text<'a>> = id("id"),
        /// Name entered.
        name: Option<Text<'a>> = text("name"),
        /// E-mail entered.
        email: Option<Text<'a>> = text("email"),
        /// Phone entered.
        phone: Option<Text<'a>> = text("phone"),
        /// Company entered.
        company: Option<Text<'a>> = text("company"),
        /// Department chosen; null for none.
        department: Option<Text<'a>> = department("department"),
        /// Routing skill.
        skill: Option<Text<'a>> = text("skill"),
        /// Subject.
        subject: Option<Text<'a>> = text("subject"),
        /// Message text.
        content: Option<Text<'a>> = text("content"),
        /// Submission time.
        time: Option<Timestamp> = time("time"),
        /// Attached files.
        attachment: Vec<Attachment<'a>> = attachments("attachment"),
        /// Form fields.
        custom_fields: Vec<CustomField<'a>> = custom_fields("custom_fields"),
        /// Custom variables (payload `custom_variable`).
        custom_variables: Vec<CustomVariable<'a>> =
            custom_variables("custom_variables", "custom_variable"),
    }
}

payload_object! {
    /// The agent's wrap-up form.
    Wrapup {
        /// Chosen wrap-up category name.
        category: Option<Text<'a>> = text("category"),
        /// Agent's comment.
        comment: Option<Text<'a>> = text("comment"),
        /// When the wrap-up was saved.
        time: Option<Timestamp> = time("time"),
        /// Custom wrap-up fields.
        fields: Vec<CustomField<'a>> = custom_fields("fields"),
    }
}

impl<'a> Fields<'a, '_> {
    /// A wrap-up form, `chat.wrap_up`.
    pub(crate) fn wrapup(&mut self, key: impl Into<Key>) -> Option<Wrapup<'a>> {
        self.object(key, Wrapup::normalize)
    }
}

/// The agent of Agent Status Changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Agent<'a> {
    pub operator_id: Option<Text<'a>>,
    pub status: AgentStatus,
}

/// The new status, which Comm100 sends as the `event` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    Online,
    Away,
    Login,
    Logout,
}

impl AgentStatus {
    /// Every status, in a fixed order.
    pub const ALL: [AgentStatus; 4] = [Self::Online, Self::Away, Self::Login, Self::Logout];

    /// The status as records spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Away => "away",
            Self::Login => "login",
            Self::Logout => "logout",
        }
    }
}
