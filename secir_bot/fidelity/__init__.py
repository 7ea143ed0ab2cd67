"""Message fidelity: what must survive the trip between Matrix and mail (issue 10).

Pure conversions, no I/O; the intake steps and the channels' renderers call them. Matrix
media encryption, which needs matrix-nio, lives with the Matrix bridge
(``bridges/matrix/media.py``).

charsets.py     mail text and headers without mojibake (charsets, encodings, IDN)
flowed.py       format=flowed (RFC 3676) and quote depth: mail text as logical lines
fromtext.py     mail text/plain → Matrix HTML (paragraphs, quotes, folded tails, links)
fromhtml.py     HTML mail → Matrix HTML (sanitised, remote images dropped, tails folded)
fit.py          cutting a long mail so that its encrypted event stays under 64 KiB
totext.py       Matrix HTML → mail text (lists, emphasis, code, quotes, links, mentions)
sanitize.py     nh3 allowlists: Matrix's HTML subset, and the mail HTML alternative
attachments.py  a verified mail's text and files, within limits (refusals as codes)
mailparts.py    the MIME body of the list's mail: text, HTML alternative, files
images.py       width and height of PNG, GIF and JPEG images
relations.py    mentions, edits, corrections, redactions, reactions
reasons.py      refusal codes with parameters, and their English text
"""
