{#- The marts agree: each (spend_date, channel) row of fct_marketing_performance attributes exactly
    the counted orders of fct_orders with that channel and order_date, and their amount_paid.
    Returns the rows that disagree. -#}
with from_orders as (
    select
        order_date,
        channel,
        count(*) as attributed_orders,
        {{ sum_money('amount_paid') }} as attributed_revenue
    from {{ ref('fct_orders') }}
    where {{ is_counted_order('status') }}
    group by order_date, channel
)

select
    performance.spend_date,
    performance.channel,
    performance.attributed_orders,
    coalesce(from_orders.attributed_orders, 0) as expected_orders,
    performance.attributed_revenue,
    coalesce(from_orders.attributed_revenue, 0) as expected_revenue
from {{ ref('fct_marketing_performance') }} as performance
left join from_orders
    on
        performance.spend_date = from_orders.order_date
        and performance.channel = from_orders.channel
where
    performance.attributed_orders <> coalesce(from_orders.attributed_orders, 0)
    or performance.attributed_revenue <> coalesce(from_orders.attributed_revenue, 0)
