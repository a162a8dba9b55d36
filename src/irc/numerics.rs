//! The IRC numerics chatd sends, by name, and the one function that formats a reply line.
//! Numbers and meanings are those of RFC 2812 and the modern IRC documentation
//! (modern.ircdocs.horse); docs/irc.md lists which command sends which.

use super::SERVER_NAME;

pub const RPL_WELCOME: &str = "001";
pub const RPL_YOURHOST: &str = "002";
pub const RPL_CREATED: &str = "003";
pub const RPL_MYINFO: &str = "004";
pub const RPL_ISUPPORT: &str = "005";
pub const RPL_UMODEIS: &str = "221";
pub const RPL_LUSERCLIENT: &str = "251";
pub const RPL_LUSERCHANNELS: &str = "254";
pub const RPL_LUSERME: &str = "255";
pub const RPL_WHOWASUSER: &str = "314";
pub const RPL_ENDOFWHOWAS: &str = "369";
pub const ERR_WASNOSUCHNICK: &str = "406";
pub const RPL_AWAY: &str = "301";
pub const RPL_ISON: &str = "303";
pub const RPL_UNAWAY: &str = "305";
pub const RPL_NOWAWAY: &str = "306";
pub const RPL_WHOISUSER: &str = "311";
pub const RPL_TIME: &str = "391";
pub const RPL_WHOISSERVER: &str = "312";
pub const RPL_ENDOFWHO: &str = "315";
pub const RPL_ENDOFWHOIS: &str = "318";
pub const RPL_WHOISCHANNELS: &str = "319";
pub const RPL_LISTSTART: &str = "321";
pub const RPL_LIST: &str = "322";
pub const RPL_LISTEND: &str = "323";
pub const RPL_CHANNELMODEIS: &str = "324";
pub const RPL_NOTOPIC: &str = "331";
pub const RPL_INVITING: &str = "341";
pub const RPL_WHOREPLY: &str = "352";
pub const RPL_NAMREPLY: &str = "353";
pub const RPL_ENDOFNAMES: &str = "366";
pub const RPL_ENDOFBANLIST: &str = "368";
pub const RPL_MOTD: &str = "372";
pub const RPL_MOTDSTART: &str = "375";
pub const RPL_ENDOFMOTD: &str = "376";
pub const ERR_NOSUCHNICK: &str = "401";
pub const ERR_NOSUCHCHANNEL: &str = "403";
pub const ERR_CANNOTSENDTOCHAN: &str = "404";
pub const ERR_TOOMANYCHANNELS: &str = "405";
pub const ERR_NORECIPIENT: &str = "411";
pub const ERR_NOTEXTTOSEND: &str = "412";
pub const ERR_INPUTTOOLONG: &str = "417";
pub const ERR_UNKNOWNCOMMAND: &str = "421";
pub const ERR_NONICKNAMEGIVEN: &str = "431";
pub const ERR_ERRONEUSNICKNAME: &str = "432";
pub const ERR_NICKNAMEINUSE: &str = "433";
pub const ERR_USERNOTINCHANNEL: &str = "441";
pub const ERR_NOTONCHANNEL: &str = "442";
pub const ERR_NOTREGISTERED: &str = "451";
pub const ERR_NEEDMOREPARAMS: &str = "461";
pub const ERR_ALREADYREGISTERED: &str = "462";
pub const ERR_PASSWDMISMATCH: &str = "464";
pub const ERR_CHANNELISFULL: &str = "471";
pub const ERR_UNKNOWNMODE: &str = "472";
pub const ERR_INVITEONLYCHAN: &str = "473";
pub const ERR_CHANOPRIVSNEEDED: &str = "482";
pub const ERR_UMODEUNKNOWNFLAG: &str = "501";
pub const ERR_USERSDONTMATCH: &str = "502";
pub const RPL_LOGGEDIN: &str = "900";
pub const RPL_SASLSUCCESS: &str = "903";
pub const ERR_SASLFAIL: &str = "904";
pub const ERR_SASLTOOLONG: &str = "905";
pub const ERR_SASLABORTED: &str = "906";
pub const ERR_SASLALREADY: &str = "907";
pub const RPL_SASLMECHS: &str = "908";

/// `:chatd <numeric> <nick> <params...>\r\n`, for the numerics that end without a text.
pub fn numeric_bare(nick: &str, code: &str, params: &[&str]) -> String {
    format!(":{SERVER_NAME} {code} {nick} {}\r\n", params.join(" "))
}

/// `:chatd <numeric> <nick> <params...> :<text>\r\n`. The last parameter always goes after
/// ` :`, so it may hold spaces.
pub fn numeric(nick: &str, code: &str, params: &[&str], text: &str) -> String {
    let mut line = format!(":{SERVER_NAME} {code} {nick}");
    for param in params {
        line.push(' ');
        line.push_str(param);
    }
    line.push_str(" :");
    line.push_str(text);
    line.push_str("\r\n");
    line
}
