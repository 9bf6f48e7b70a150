"""The public web pages: subscribe → confirm, unsubscribe (RFC 8058 one-click), the edition web view."""

from __future__ import annotations

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy import select, text

from syndicate import editions, services, subscribers, tokens
from syndicate.db import transaction
from syndicate.errors import InvalidInput, NotFound
from syndicate.models import Newsletter, Subscriber
from syndicate.tasks import send_confirmation
from syndicate.templating import render


def page(template: str, status: int = 200, /, **context) -> HTMLResponse:
    return HTMLResponse(render(f"web/{template}.html", **context), status_code=status)


def message(title: str, text: str, status: int = 200) -> HTMLResponse:
    return page("message", status, title=title, message=text)


def create_app() -> FastAPI:
    app = FastAPI(title="syndicate", docs_url="/docs", redoc_url=None)

    def svc():
        return services.current()

    @app.exception_handler(InvalidInput)
    async def invalid(request: Request, e: InvalidInput):
        return message("That didn't work", str(e), 400)

    @app.exception_handler(NotFound)
    async def not_found(request: Request, e: NotFound):
        return message("Not found", str(e), 404)

    @app.get("/", response_class=HTMLResponse)
    def subscribe_form():
        with transaction(svc().Session) as session:
            newsletters = session.scalars(select(Newsletter).where(Newsletter.status == "active")
                                          .order_by(Newsletter.name)).all()
            return page("subscribe", newsletters=newsletters, chosen=[n.slug for n in newsletters][:1],
                        error=None, email="", name="")

    @app.post("/subscribe", response_class=HTMLResponse)
    def subscribe(email: str = Form(""), name: str = Form(""), newsletter: list[str] = Form(default=[])):
        with transaction(svc().Session) as session:
            chosen = session.scalars(select(Newsletter).where(Newsletter.slug.in_(newsletter))).all()
            try:
                signup = subscribers.subscribe(session, email, [n.id for n in chosen], name=name or None)
            except InvalidInput as e:
                everything = session.scalars(select(Newsletter).order_by(Newsletter.name)).all()
                return page("subscribe", 400, newsletters=everything, chosen=newsletter, error=str(e),
                            email=email, name=name)
            subscriber_id, send, awaiting = signup.subscriber.id, signup.send_confirmation, signup.awaiting_confirmation
        if send:
            send_confirmation.delay(subscriber_id)  # after commit: the task finds the row
        if not awaiting:
            return message("You're subscribed", "This address already receives the newsletters you chose.")
        if not send:
            return message("Check your inbox", "We've already sent several confirmation emails to this address "
                           "in the last hour; please use the link in one of them.")
        return message("Check your inbox", "We've sent you an email with a link to confirm your subscription.")

    @app.get("/confirm/{token}", response_class=HTMLResponse)
    def confirm_page(token: str):
        tokens.read_confirm_token(svc().settings.secret_key, token)
        return page("confirm")

    @app.post("/confirm/{token}", response_class=HTMLResponse)
    def confirm(token: str):
        with transaction(svc().Session) as session:
            subscribers.confirm(session, svc().settings, token)
        return message("You're subscribed", "Thank you: your subscription is confirmed.")

    @app.get("/u/{token}", response_class=HTMLResponse)
    def unsubscribe_page(token: str):
        subscriber_id, newsletter_id = tokens.read_unsubscribe_token(svc().settings.secret_key, token)
        with transaction(svc().Session) as session:
            subscriber, newsletter = session.get(Subscriber, subscriber_id), session.get(Newsletter, newsletter_id)
            if subscriber is None or newsletter is None:
                raise NotFound("this unsubscribe link belongs to a subscription that no longer exists")
            return page("unsubscribe", subscriber=subscriber, newsletter=newsletter)

    @app.post("/u/{token}", response_class=HTMLResponse)
    def unsubscribe(token: str):
        # RFC 8058: the mailbox provider POSTs List-Unsubscribe=One-Click with no cookies.
        # The signed token is the authentication; the answer is 200, never a redirect.
        with transaction(svc().Session) as session:
            subscription = subscribers.unsubscribe(session, svc().settings, token)
            name = subscription.newsletter.name
        return message("You're unsubscribed", f"You will not receive {name} any more.")

    @app.get("/n/{slug}/{number}", response_class=HTMLResponse)
    def web_view(slug: str, number: int):
        with transaction(svc().Session) as session:
            edition = editions.get_edition(session, slug, number)
            return HTMLResponse(editions.public_html(edition, svc().settings))

    @app.get("/healthz")
    def healthz():
        try:
            with svc().engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception as e:  # noqa: BLE001 - any failure is "unhealthy", said in the body
            return JSONResponse({"status": "error", "database": str(e)}, status_code=503)
        return {"status": "ok"}

    return app


app = create_app()
